"""One round implementation: Flower's Simulation Engine (real Ray actors) and the
Flower-free in-process engine give the same global model, bit for bit, and the
same bytes, message for message."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from prunus.common.config import load
from prunus.server.ledger import Ledger
from prunus.server.run import run_federation
from prunus.simulations.inprocess import InProcessTransport

pytestmark = pytest.mark.slow

# a pruned int8 uplink with error feedback (its residual in the client-state
# store) and federated evaluation, with: model pruning and an int8 broadcast,
# three messages in flight per actor (Ray runs clients in another order);
# each client's requested rows (a row query per message) as int4 and its
# own rank-1 factor with row scales up (ml1m-total.toml's uplink), five
# messages to an actor per call; the bandit's rows with a low-rank uplink,
# one message per call (Flower's own worker); the others batch 16 (default);
# and stock Flower, with none of prunus's accelerators
COMMON = ["synthetic-users=40", "synthetic-items=60", "eval-negatives=20", "dim=8", "rounds=4",
          "clients-per-round=12", "eval-every=2", "federated-eval-clients=6", "seed=5",
          "prune-method=topk-global", "density=0.1", "value-codec=int8"]  # fmt: skip
VARIANTS = {
    "pruned model": ["downlink-codec=int8", "model-sparsity=0.5", "model-prune-start=2", "model-prune-end=3",
                     "actor-pipeline=3"],
    "requested rows": ["broadcast-rows=requested", "negative-pool=2", "request-pad=1", "downlink-codec=int4",
                       "downlink-rounding=nearest", "downlink-entropy=deflate", "prune-method=lowrank", "rank=1", "rank-basis=client-rows",
                       "client-batch=5"],
    "bandit rows": ["broadcast-rows=bandit", "bandit-items=0.5", "prune-method=lowrank", "rank=2", "client-batch=1"],
    # secure aggregation (its four exchanges a round) over half the item rows in the round's low-rank
    # projection, with error feedback, a fifth of the clients crashing
    "secure aggregation": ["secure-aggregation=true", "secure-rows=0.5", "prune-method=lowrank", "rank=2",
                           "error-feedback=true", "fault-rate=0.2", "fault-kind=crash"],
    # every Flower accelerator off (common/flower_compat.py): stock Flower delivers the same
    "stock Flower": ["downlink-codec=int8", "fast-dispatch=false", "fast-submit=false", "fast-discovery=false",
                     "reply-wait=false", "actor-pipeline=1", "client-batch=1"],
}
COUNTS = ["clients", "replies", "failures", "rejected", "uplink_bytes", "downlink_bytes", "request_bytes", "protocol_bytes",
          "dense_uplink_bytes", "dense_downlink_bytes", "uplink_nnz", "downlink_nnz"]  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ML100K = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ml-100k"


@pytest.mark.parametrize("variant", VARIANTS)
def test_flower_and_in_process_rounds_give_the_same_model_and_bytes(tmp_path, variant):
    a = _compare(tmp_path, COMMON + VARIANTS[variant], 40)
    assert (a["request_bytes"] > 0).all() == (variant == "requested rows")
    assert (a["protocol_bytes"] > 0).all() == (variant == "secure aggregation")


def test_on_ml100k_flower_and_in_process_rounds_give_the_same_model_and_bytes(tmp_path):
    """Real data, one client per user (943), top-k int8 with error feedback."""
    if not (ML100K / "u.data").exists():
        pytest.skip(f"ML-100K is not at {ML100K}")
    _compare(tmp_path, ["dataset=ml-100k", f"data-dir={ML100K}", "rounds=3", "clients-per-round=40", "eval-every=3",
                        "dim=16", "prune-method=topk-global", "density=0.01", "value-codec=int8", "seed=1"], 943)


def _compare(tmp_path: Path, SETTINGS: list[str], partitions: int) -> pd.DataFrame:
    """Run `SETTINGS` on Flower's engine (a subprocess, as a user runs it) and
    in process; assert the same model, bytes and metrics; the Flower run's rounds."""
    flower = tmp_path / "flower"
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate",
           *(arg for s in SETTINGS for arg in ("--set", s)), "--out", str(flower)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # The reply's "info" record says where it ran; give the in-process clients
    # the same host and Ray node, so that every reply is the same message.
    placed = pd.read_csv(flower / "clients.csv", keep_default_na=False)
    placed = placed[placed["status"] != "failed"]  # a failed reply says nothing of where it ran
    (host, ray_node), = placed[["host", "ray_node"]].drop_duplicates().itertuples(index=False)
    cfg = load(None, [*SETTINGS, f"out={tmp_path / 'inprocess'}"])
    transport = InProcessTransport(cfg, lambda p: {"partition-id": p, "host": host, "ray-node": ray_node})
    run_federation(cfg, transport, list(range(partitions)), Ledger())
    inprocess = tmp_path / "inprocess"

    assert _sha(flower / "model.npz") == _sha(inprocess / "model.npz")
    a, b = (pd.read_csv(d / "rounds.csv") for d in (flower, inprocess))
    # round 0 is Flower's partition discovery (node ids are random there); the
    # in-process engine knows its partitions and sends nothing in round 0
    a, b = a[a["round"] > 0].reset_index(drop=True), b[b["round"] > 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(a[COUNTS], b[COUNTS])
    metrics = [c for c in a if c.startswith(("hr@", "ndcg@", "fed-"))]
    assert metrics and a[metrics].equals(b[metrics])
    assert (a["uplink_bytes"] > 0).all() and (a["rejected"] == 0).all()
    assert (a["failures"] == 0).all() or "fault-kind=crash" in SETTINGS
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (flower, inprocess))
    assert sa["metrics"] == sb["metrics"] and sa["model"] == sb["model"]
    return a
