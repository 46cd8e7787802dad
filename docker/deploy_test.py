"""`make deploy-test`: prunus deployed across containers, checked, torn down.

1. A Flower Deployment Engine federation (docker/deploy/federation.py): a
   SuperLink with TLS and SuperNode authentication, the ServerApp's SuperExec
   and three SuperNodes, each in its own container on a container network;
   `flwr run` from the host, 5 rounds of ML-100K (3 IID silos) with top-k int8
   + error feedback and requested rows. Checked: the same rounds in one
   process (`engine = "inprocess"`) give the same model, bytes and metrics; a
   SuperNode with an unregistered key is refused and the logs say so; a
   SuperNode stopped in round 3 costs that round its reply and the run
   finishes (the node, started again with its key, replies again by round 5).
2. A Ray cluster (docker/deploy/raycluster.py): a head and two workers;
   `prunus simulate --ray-address` runs clients on all three; a worker stopped
   mid-run (back after the last round): the run finishes with the failures
   counted; a driver stopped
   mid-run: `--resume` from its last checkpoint completes the run.

Needs the images (`make images`), podman or docker, and ML-100K on the host.
Writes WORK/transcript.md (every command, its seconds, what was checked) and
WORK/report.json; exits 1 naming every check that failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
from deploy.engine import DeployError, Engine, Transcript, find_engine
from deploy.federation import REPO, SILOS, Federation, run_config_text
from deploy.raycluster import WORKERS, RayCluster
from deploy.runs import app_defaults, compare, rounds, rounds_logged, run_in_process, summary

from prunus.server import checkpoint

# 5 rounds of ML-100K over 3 IID silos, top-k int8 with error feedback, each
# silo sent only the item rows it asks for; data-dir and out are per side
FEDERATION = {"dataset": "ml-100k", "partition": "iid", "num-silos": SILOS, "seed": 0, "dim": 32, "rounds": 5,
              "clients-per-round": SILOS, "prune-method": "topk", "density": 0.05, "value-codec": "int8",
              "error-feedback": True, "broadcast-rows": "requested", "eval-every": 1, "federated-eval-clients": 0,
              "round-timeout": 300.0}  # fmt: skip
IDENTITY = ("dataset", "partition", "num-silos", "seed")  # what `prunus partition` needs to cut the same silos
STOPPED_ROUND = 3
# one client per user, every one of the 943 each round (seconds of work: a
# stop lands inside a round), on three one-CPU Ray nodes; a checkpoint every
# round. 8 rounds of about 5 s: a kill asked for once round 1 is done lands
# (podman, niced, on a loaded machine: seconds later) with rounds still to run.
RAY_ROUNDS = 8
RAY = ["dataset=ml-100k", "data-dir=/data", "partition=user", f"rounds={RAY_ROUNDS}", "clients-per-round=943",
       "dim=16", "prune-method=topk", "density=0.05", "value-codec=int8", "eval-every=2", "checkpoint-every=1",
       "round-timeout=60", "seed=0"]  # fmt: skip


class Checks:
    """The outcomes checked, each with what was seen."""

    def __init__(self, transcript: Transcript) -> None:
        self.transcript, self.results = transcript, []

    def __call__(self, name: str, ok: bool, seen: object) -> bool:
        self.results.append({"check": name, "ok": bool(ok), "seen": seen})
        self.transcript.fact(f"{'ok' if ok else 'FAILED'}: {name} ({seen})")
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [r["check"] for r in self.results if not r["ok"]]


def federation_part(fed: Federation, data: Path, check: Checks) -> dict:
    t = fed.engine.transcript
    t.heading("Federation: SuperLink, ServerApp and 3 SuperNodes in containers (TLS, SuperNode authentication)")
    fed.prepare({key: FEDERATION[key] for key in IDENTITY} | {"data-dir": str(data)})
    fed.up()
    refused = fed.intruder()
    check("a SuperNode with an unregistered key is refused", refused["exit_code"] != 0
          and refused["supernode_says"] and refused["superlink_says"], refused)  # fmt: skip

    t.heading("Federation: 5 rounds, submitted with flwr run from the host")
    full = fed.runs / "federation"
    seconds = fed.run(run_config_text(FEDERATION | {"data-dir": "/data", "out": "/app/runs/federation"}), full)

    t.heading(f"Federation: SuperNode 3 stopped in round {STOPPED_ROUND}")
    stopped = fed.runs / "federation-stopped"
    node = fed.name(f"supernode-{SILOS}")
    events = {STOPPED_ROUND: lambda: fed.engine("stop", "-t", "5", node),
              STOPPED_ROUND + 1: lambda: fed.engine("start", node)}  # fmt: skip
    stop_seconds = fed.run(run_config_text(FEDERATION | {"data-dir": "/data", "out": "/app/runs/federation-stopped"}),
                           stopped, events)  # fmt: skip
    r = rounds(stopped).set_index("round")
    # failures count messages: the row query and the training message it was sent
    check(f"round {STOPPED_ROUND} lost the stopped SuperNode's reply",
          r.loc[STOPPED_ROUND, "replies"] == SILOS - 1 and r.loc[STOPPED_ROUND, "failures"] > 0,
          r.loc[STOPPED_ROUND, ["replies", "failures"]].to_dict())  # fmt: skip
    check("the run finished all its rounds", summary(stopped)["rounds"] == FEDERATION["rounds"], summary(stopped)["rounds"])
    check("the restarted SuperNode (same key, same node) replied again in the last round",
          r.loc[FEDERATION["rounds"], "replies"] == SILOS, r["replies"].tolist())  # fmt: skip
    fed.save_logs()

    t.heading("The same config in one process (engine inprocess), on the host")
    reference = fed.runs / "in-process"
    values = app_defaults(REPO / "pyproject.toml") | FEDERATION | {"data-dir": str(data)}
    ref_seconds = run_in_process(values, reference, lambda p: fed.name(f"supernode-{p + 1}"))
    t.fact(f"in-process run finished in {ref_seconds:.1f} s")
    same = compare(full, reference)
    check("the federation's model equals the in-process model, bit for bit", same["same_model"], same["same_model"])
    check("every round's counts, bytes and metrics are equal", not same["differ"], same["differ"] or "all equal")
    check("the summary's metrics are equal", same["same_metrics"], same["metrics"])
    return {"seconds": seconds, "stopped_seconds": stop_seconds, "in_process_seconds": ref_seconds,
            "comparison": same, "refused": refused, "stopped_rounds": rounds(stopped).to_dict("list")}


def ray_part(cluster: RayCluster, check: Checks) -> dict:
    t = cluster.engine.transcript
    t.heading("Ray cluster: a head and two workers in containers")
    cluster.up()

    t.heading("Ray: prunus simulate attached to the cluster, worker 2 killed once round 1 is done, back after the last")
    # The client actor that lived on worker 2 waits for a node to restart on
    # (client-actor-restarts): the messages it held fail at the round timeout,
    # the other rounds go to the two actors left, and the run, its rounds
    # done, ends once the actor has a node again and its calls return.
    out, worker = cluster.runs / "ray", cluster.worker(WORKERS)
    code, seconds = cluster.simulate([*(a for s in RAY for a in ("--set", s)), "--out", "/app/runs/ray"], out,
                                     {2: lambda: cluster.engine("kill", worker),
                                      RAY_ROUNDS + 1: lambda: cluster.engine("start", worker)})  # fmt: skip
    clients = pd.read_csv(out / "clients.csv", keep_default_na=False)
    first = clients[(clients["round"] == 1) & (clients["status"] != "failed")]
    nodes = sorted(first["ray_node"].unique())
    check("round 1 ran clients on three Ray nodes", len(nodes) == 1 + WORKERS, [n[:8] for n in nodes])
    s = summary(out)
    failures = int(rounds(out)["failures"].sum())
    check("the run with a worker stopped finished, its failures counted",
          code == 0 and s["rounds"] == RAY_ROUNDS and failures > 0, {"rounds": s["rounds"], "failures": failures})

    t.heading("Ray: a run whose driver is killed once round 1 is done, then --resume")
    cluster.wait_for_nodes(1 + WORKERS)
    resumed = cluster.runs / "ray-resume"
    driver = cluster.name("driver")
    cut_code, cut_seconds = cluster.simulate(
        [*(a for s in RAY for a in ("--set", s)), "--out", "/app/runs/ray-resume"], resumed,
        {2: lambda: cluster.engine("kill", driver)}, check=False)  # fmt: skip
    cut_ran = rounds_logged(cluster.engine.logs(driver))
    check("the driver, killed with rounds still to run, left a checkpoint and no summary",
          cut_code != 0 and cut_ran and cut_ran[-1] < RAY_ROUNDS and (resumed / "checkpoint.npz").exists()
          and not (resumed / "summary.json").exists(),
          {"exit": cut_code, "last round it ran": cut_ran[-1] if cut_ran else None})  # fmt: skip
    saved = checkpoint.load(resumed).server_round
    code, resume_seconds = cluster.simulate(["--resume", "/app/runs/ray-resume"], resumed)
    ran, r = rounds_logged(cluster.engine.logs(driver)), rounds(resumed)
    check("--resume completed the run from its last checkpoint, running only the rounds after it",
          code == 0 and summary(resumed)["rounds"] == RAY_ROUNDS and r["round"].tolist() == list(range(RAY_ROUNDS + 1))
          and ran == list(range(saved + 1, RAY_ROUNDS + 1)),
          {"checkpoint round": saved, "rounds run on resume": ran, "rounds.csv": r["round"].tolist()})  # fmt: skip
    cluster.save_logs()
    return {"seconds": seconds, "cut_seconds": cut_seconds, "resume_seconds": resume_seconds, "checkpoint_round": saved,
            "placement": s["placement"], "failures": failures, "rounds": rounds(out).to_dict("list")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the ML-100K folder on the host (u.data)")
    parser.add_argument("--work", default="runs/deploy-test", help="folder for keys, partitions, runs, logs, transcript")
    parser.add_argument("--engine", help="podman or docker (default: the first found)")
    parser.add_argument("--tag", default="cpu", help="image tag (make images TAG=...)")
    parser.add_argument("--keep", action="store_true", help="leave the containers running at the end")
    args = parser.parse_args(argv)
    data, work = Path(args.data).resolve(), Path(args.work).resolve()
    if not (data / "u.data").exists():
        print(f"deploy_test: no ML-100K at {data} (u.data missing)", file=sys.stderr)
        return 2
    exe = find_engine(args.engine)
    if not exe:
        print("deploy_test: neither podman nor docker found", file=sys.stderr)
        return 2
    transcript = Transcript({str(work): "$WORK", str(data): "$ML100K", str(REPO): "."})
    engine, check = Engine(exe, transcript), Checks(transcript)
    missing = [i for i in (f"prunus-{r}:{args.tag}" for r in ("superlink", "serverapp", "supernode"))
               if not engine.has_image(i)]  # fmt: skip
    if missing:
        print(f"deploy_test: images missing: {', '.join(missing)} (make images)", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    network, prefix = "prunus-deploy-test", "prunus-dt"
    fed = Federation(engine, work, data, args.tag, network, prefix)
    cluster = RayCluster(engine, work, data, args.tag, network, prefix)
    started, report = time.perf_counter(), {}
    engine.remove(fed.containers + cluster.containers, network)  # what an interrupted run left
    try:
        transcript.heading("A container network: each container its own network namespace, names resolved")
        engine("network", "create", network)
        report["federation"] = federation_part(fed, data, check)
        engine.remove(fed.containers, network="")
        report["ray"] = ray_part(cluster, check)
    except Exception as err:  # a step that failed, or a bug: named in the report, and everything still torn down
        if not isinstance(err, DeployError):
            traceback.print_exc()
        check("every step ran", False, str(err) if isinstance(err, DeployError) else f"{type(err).__name__}: {err}")
    finally:
        if not args.keep:
            transcript.heading("Teardown")
            engine.remove(fed.containers + cluster.containers, network)
    report |= {"checks": check.results, "seconds": time.perf_counter() - started, "engine": Path(exe).name}
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str))
    transcript.fact(f"deploy-test: {len(check.results) - len(check.failed)}/{len(check.results)} checks passed "
                    f"in {report['seconds']:.0f} s")  # fmt: skip
    transcript.write(work / "transcript.md")
    if check.failed:
        print("deploy_test: FAILED: " + "; ".join(check.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
