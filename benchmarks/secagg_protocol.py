"""CPU seconds of each exchange of one secure-aggregation round, both halves, without a transport.

Sized as an ML-1M round of `ml1m-secure.toml`: 256 clients, 24 neighbours
each, threshold 13, 70,416 ring elements (rank 16 on 3,706 item rows, the
item bias, row counts, clipped count's digits) in a 16-bit ring. Every
client's masked input and the server's unmasked sum are the real protocol's
(`common/secagg/protocol.py`), and the sum is checked against the inputs'.
What it leaves out (training, codecs, message sizing, the transport) is
the same with or without secure aggregation or is timed by
`secure_round_time.py`.

    python benchmarks/secagg_protocol.py [--clients 256] [--out benchmarks/results/secagg_protocol.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from secure_round_time import code_commit  # this folder is on the path of a script run from it

from prunus.common.secagg import protocol
from prunus.common.secagg.protocol import RoundSetup, ServerRound
from prunus.common.secagg.ring import Ring

ROOT = Path(__file__).resolve().parents[1]
LENGTH, DEGREE, THRESHOLD = 70_416, 24, 13


def one_round(clients: int) -> dict[str, float]:
    """CPU seconds of each step, summed over the round's clients."""
    ring = Ring(16, 3.0, clients)
    setup = RoundSetup(1, 0, tuple(range(0, 3 * clients, 3)), DEGREE, THRESHOLD, ring)
    rng = np.random.default_rng(0)
    inputs = {p: rng.integers(0, ring.levels + 1, LENGTH).astype(ring.dtype) for p in setup.clients}
    seconds: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable, *args):
        start = time.process_time()
        out = fn(*args)
        seconds[name] += time.process_time() - start
        return out

    server, mine = ServerRound(setup, LENGTH), {}
    for p in setup.clients:
        mine[p], public = timed("client: keys", protocol.advertise, p)
        timed("server: keys", server.take_keys, p, *public)
    for p in setup.clients:
        sealed = timed("client: shares", protocol.share_keys, setup, mine[p], timed("server: shares", server.peers_of, p))
        timed("server: shares", server.take_shares, p, sealed)
    for p in setup.clients:
        masked = timed("client: masked input", protocol.masked_input, setup, mine[p],
                       timed("server: masked input", server.routed_to, p), inputs[p])
        timed("server: masked input", server.take_input, p, masked)
    for p in setup.clients:
        answer = timed("client: unmask", protocol.unmask, setup, mine[p], *timed("server: unmask", server.unmask_request, p))
        timed("server: unmask", server.take_answer, p, answer)
    total, members = timed("server: sum", server.total)
    expected = np.sum([inputs[p].astype(np.uint64) for p in members], axis=0) & np.uint64(ring.mask)
    if not np.array_equal(total.astype(np.uint64), expected):
        raise SystemExit("the unmasked sum is not the inputs' sum")
    return dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/secagg_protocol.json")
    args = parser.parse_args()
    if args.clients <= DEGREE:
        parser.error(f"--clients must be above the degree, {DEGREE}")
    seconds = one_round(args.clients)
    halves = {half: round(sum(v for k, v in seconds.items() if k.startswith(half)), 3) for half in ("client", "server")}
    result = {"command": f"python benchmarks/secagg_protocol.py --clients {args.clients}",
              "cpu_s": {k: round(v, 3) for k, v in seconds.items()}, "cpu_s_by_half": halves,
              "cpu_s_round": round(sum(halves.values()), 3), "commit": code_commit()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
