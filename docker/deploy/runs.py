"""A run's outputs, read back: its progress, its rounds and the comparison of
two runs of one config (a deployment and the same rounds in one process)."""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from deploy.engine import DeployError

# rounds.csv's counts that two runs of one config must share, round by round
COUNTS = ["clients", "replies", "failures", "rejected", "uplink_bytes", "downlink_bytes", "request_bytes",
          "protocol_bytes", "dense_uplink_bytes", "dense_downlink_bytes", "uplink_nnz", "downlink_nnz"]  # fmt: skip
BYTES = ["uplink_bytes", "downlink_bytes", "request_bytes"]


def last_round(out: Path) -> int:
    """The last round in out/rounds.csv (-1 before there is one)."""
    try:
        rounds = pd.read_csv(out / "rounds.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return -1
    return int(rounds["round"].max()) if len(rounds) else -1


def follow(running: Callable[[], bool], out: Path, events: dict[int, Callable[[], None]] | None,
           timeout: float, what: str) -> float:
    """Wait while `running()`, calling `events[r]()` once round r-1 is in
    out/rounds.csv (so while round r runs); returns the seconds waited."""
    started = time.perf_counter()
    pending = dict(sorted((events or {}).items()))
    while running():
        if time.perf_counter() - started > timeout:
            raise DeployError(f"{what} took over {timeout:.0f} s")
        done = last_round(out)
        for r in [r for r in pending if done >= r - 1]:
            pending.pop(r)()
        time.sleep(0.5)
    return time.perf_counter() - started


PROGRESS = re.compile(r"^\[prunus\] round\s+(\d+)/\d+", re.M)


def rounds_logged(console: str) -> list[int]:
    """The rounds a run's console output says it ran (its progress lines):
    a resumed run's start at the round after its checkpoint's."""
    return [int(r) for r in PROGRESS.findall(console)]


def rounds(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "rounds.csv")


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def app_defaults(pyproject: Path) -> dict:
    """The run config a Flower app starts from: pyproject's [tool.flwr.app.config]."""
    return tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]


def same_model(a: Path, b: Path) -> bool:
    """Whether two model.npz hold the same arrays, bit for bit (their zip
    wrappers may differ: the numpy that wrote each may be another)."""
    with np.load(a) as x, np.load(b) as y:
        return x.files == y.files and all(x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]) for k in x.files)


def compare(deployed: Path, reference: Path) -> dict:
    """Whether two runs of one config trained the same model with the same
    bytes and metrics, round by round; what differs, if anything. Round 0 is
    the deployment's partition discovery (a query to every node), which a run
    in one process does not need: its bytes are reported apart."""
    a, b = rounds(deployed), rounds(reference)
    a_train, b_train = a[a["round"] > 0].reset_index(drop=True), b[b["round"] > 0].reset_index(drop=True)
    metrics = [c for c in a_train if c.startswith(("hr@", "ndcg@", "fed-"))]
    differ = [c for c in COUNTS + metrics if not a_train[c].equals(b_train[c])] if len(a_train) == len(b_train) \
        else ["rounds"]
    sa, sb = summary(deployed), summary(reference)
    discovery = a[a["round"] == 0]
    return {
        "same_model": same_model(deployed / "model.npz", reference / "model.npz"),
        "differ": differ,
        "same_metrics": sa["metrics"] == sb["metrics"],
        "metrics": sa["metrics"],
        "per_round": {col: a_train[col].tolist() for col in BYTES},
        "reference_per_round": {col: b_train[col].tolist() for col in BYTES},
        "discovery_bytes": int(discovery[BYTES].to_numpy().sum()),
        "comm": sa["comm"],
        "reference_comm": sb["comm"],
    }


def run_in_process(values: dict, out: Path, host_of) -> float:
    """The run config `values` (as Flower hands it to the ServerApp) in this
    process (`engine = "inprocess"`), each partition's replies saying they ran
    on `host_of(partition)` as the deployment's do; returns its seconds."""
    from prunus.common.config import from_run_config
    from prunus.common.datasets import num_partitions
    from prunus.server.ledger import Ledger
    from prunus.server.run import run_federation
    from prunus.simulations.inprocess import InProcessTransport

    started = time.perf_counter()
    cfg = from_run_config(values | {"out": str(out)})
    transport = InProcessTransport(cfg, lambda p: {"partition-id": p, "host": host_of(p)})
    run_federation(cfg, transport, list(range(num_partitions(cfg))), Ledger())
    return time.perf_counter() - started
