"""Per-round cost of Flower's Simulation Engine with many SuperNodes, same run:
Flower's own dispatcher and reply polling (every 0.1 s); the fast dispatcher
(`prunus.common.flower_compat.enable_fast_dispatch`) with the 5 ms reply poll
prunus used before; and the fast dispatcher with the Grid woken by each reply
(`flower_compat.wait_for_replies`). Each setting reports its median round and
the driver's CPU seconds per round (the whole simulation's process: SuperLink,
dispatch, Ray submission and the ServerApp).

A ServerApp sends `--messages` messages carrying a `--floats` float32 array to
that many of `--nodes` SuperNodes, whose ClientApp echoes them back; each
setting runs `--rounds` rounds and the first (actor start-up) is dropped.

    python benchmarks/flower_dispatch.py [--nodes 6040 --messages 256] [--out benchmarks/results/flower_dispatch.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import time

import numpy as np


def _one_setting(fast: bool, wait: bool, nodes: int, messages: int, floats: int, rounds: int, out: mp.Queue) -> None:
    from flwr.app import Array, ArrayRecord, Context, Message, MessageType, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from prunus.common import flower_compat

    flower_compat.enable_fast_dispatch(fast)
    client = ClientApp()

    @client.train()
    def echo(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    server = ServerApp()
    times: list[float] = []
    cpu: list[float] = []

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        while len(list(grid.get_node_ids())) < nodes:
            time.sleep(0.2)
        if wait:
            flower_compat.wait_for_replies(grid)
        elif fast:
            grid.pull_interval = 0.005
        targets = sorted(grid.get_node_ids())[:messages]
        record = ArrayRecord({"x": Array(np.zeros(floats, np.float32))})
        for _ in range(rounds):
            tick, tock = time.perf_counter(), time.process_time()
            batch = [Message(RecordDict({"arrays": record}), dst_node_id=n, message_type=MessageType.TRAIN) for n in targets]
            replies = list(grid.send_and_receive(batch))
            assert len(replies) == messages
            times.append(time.perf_counter() - tick)
            cpu.append(time.process_time() - tock)

    run_simulation(server_app=server, client_app=client, num_supernodes=nodes, backend_config={"client_resources": {"num_cpus": 1}})
    out.put((times[1:], cpu[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=6040)
    parser.add_argument("--messages", type=int, default=256)
    parser.add_argument("--floats", type=int, default=120_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/flower_dispatch.json")
    args = parser.parse_args()
    results = {}
    for name, fast, wait in (("flower", False, False), ("fast-dispatch", True, False),
                             ("fast-dispatch+reply-wait", True, True)):
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_one_setting, args=(fast, wait, args.nodes, args.messages, args.floats, args.rounds, queue)
        )
        proc.start()
        times, cpu = queue.get()
        proc.join()
        results[name] = {"round_seconds": times, "median_round_s": statistics.median(times),
                         "driver_cpu_seconds": cpu, "median_driver_cpu_s": statistics.median(cpu)}
        print(f"{name:>24}: median round {statistics.median(times):6.2f} s, driver CPU {statistics.median(cpu):6.2f} s"
              f"  ({args.messages} messages, {args.nodes} nodes)")
    ratio = results["flower"]["median_round_s"] / results["fast-dispatch"]["median_round_s"]
    print(f"speed-up of the dispatcher: {ratio:.1f}x")
    cpu_ratio = results["fast-dispatch"]["median_driver_cpu_s"] / results["fast-dispatch+reply-wait"]["median_driver_cpu_s"]
    print(f"driver CPU, 5 ms poll against reply wait: {cpu_ratio:.2f}x")
    report = {"command": "python benchmarks/flower_dispatch.py", "args": vars(args), "results": results,
              "speedup": ratio, "reply_wait_driver_cpu_ratio": cpu_ratio, "machine": platform.platform(), "cpus": mp.cpu_count()}  # fmt: skip
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
