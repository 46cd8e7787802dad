"""End to end through Flower's Simulation Engine and real Ray processes."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

pytestmark = pytest.mark.slow

ARGS = ["--set", "synthetic-users=40", "--set", "synthetic-items=60", "--set", "eval-negatives=20",
        "--set", "dim=8", "--set", "rounds=3", "--set", "clients-per-round=12", "--set", "eval-every=1",
        "--set", "federated-eval-clients=6", "--set", "seed=3"]  # fmt: skip


def _simulate(out: Path, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", *ARGS, *(extra or []), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _check_quiet_console(done.stdout, done.stderr, out)
    return json.loads((out / "summary.json").read_text())


def _check_quiet_console(stdout: str, stderr: str, out: Path) -> None:
    """The console holds the progress and the final table; Flower's and Ray's
    logs are in the run folder's run.log, not on the console."""
    assert re.search(r"\[prunus\] round +3/3 ", stdout)  # progress (one plain line per round off a terminal)
    assert "uplink bytes" in stdout and "wall time" in stdout  # the final table
    console = stdout + stderr
    for noise in ("INFO", "DEPRECATED", "will be retried", "ClientAppActor"):
        assert noise not in console, f"{noise!r} on the console:\n{console[-2000:]}"
    assert not re.search(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [IWE] \d+ \d+\]", console, re.M), "a Ray C++ log line on the console"
    log = (out / "run.log").read_text()
    assert "INFO" in log and "run_simulation" in log  # Flower's lines went here instead


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, dict, dict]:
    base = tmp_path_factory.mktemp("sim")
    return base, _simulate(base / "a"), _simulate(base / "b")


def test_summary_has_metrics_bytes_and_config(two_runs):
    base, summary, _ = two_runs
    assert set(summary["metrics"]) >= {"hr@10", "ndcg@10", "fed-hr@10"}
    assert summary["comm"]["uplink_bytes"] > 0 and summary["comm"]["downlink_bytes"] > 0
    assert summary["rounds"] == 3 and summary["wall_seconds"] > 0
    assert summary["config"]["clients-per-round"] == 12
    assert summary["failures"] == 0 and summary["rejected"] == 0


def test_partitions_come_from_the_engine_confirmed_by_a_few_nodes(two_runs):
    """Under `prunus simulate` the ServerApp reads the engine's node map: round 0
    (partition discovery) asks only the first ENGINE_CHECKED of the 40 nodes."""
    from prunus.common.params import wire_bytes
    from prunus.common.payload import Content
    from prunus.server.app import ENGINE_CHECKED

    base, _, _ = two_runs
    rounds = pd.read_csv(base / "a" / "rounds.csv")
    assert ENGINE_CHECKED < 40
    assert rounds.loc[rounds["round"] == 0, "downlink_bytes"].item() == ENGINE_CHECKED * wire_bytes(Content())
    assert "partitions from the simulation engine's node map" in (base / "a" / "run.log").read_text()


def test_rounds_csv_logs_every_round_with_bytes(two_runs):
    base, summary, _ = two_runs
    rounds = pd.read_csv(base / "a" / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3]
    train_rounds = rounds[rounds["round"] > 0]
    assert (train_rounds["clients"] == 12).all() and (train_rounds["replies"] == 12).all()
    assert (train_rounds["uplink_bytes"] > 0).all() and (train_rounds["downlink_bytes"] > 0).all()
    assert rounds["uplink_bytes"].sum() == summary["comm"]["uplink_bytes"]
    assert (base / "a" / "curve.png").exists()


def test_clients_csv_keeps_where_each_reply_was_computed(two_runs):
    base, summary, _ = two_runs
    clients = pd.read_csv(base / "a" / "clients.csv")
    train = clients[clients["kind"] == "train"]
    assert len(train) == 3 * 12 and (train["status"] == "accepted").all()
    assert train.groupby("round")["partition"].nunique().tolist() == [12, 12, 12]
    assert clients["ray_node"].notna().all() and clients["host"].notna().all()
    assert train["uplink_bytes"].sum() + clients.loc[clients["kind"] == "evaluate", "uplink_bytes"].sum() == (
        summary["comm"]["uplink_bytes"] - _discovery_bytes(base / "a")
    )
    assert sum(summary["placement"]["ray_nodes"].values()) == len(clients)


def _discovery_bytes(run: Path) -> int:
    rounds = pd.read_csv(run / "rounds.csv")
    return int(rounds.loc[rounds["round"] == 0, "uplink_bytes"].sum())


def test_same_config_and_seed_give_the_same_metrics(two_runs):
    _, first, second = two_runs
    assert first["metrics"] == second["metrics"]
    assert first["comm"] == second["comm"]


def test_pruned_federation_counts_fewer_bytes_than_dense(two_runs):
    """Top-k with error feedback, fp16 values and an fp16 broadcast, through
    Flower and Ray: the ledger shows the saving against the dense equivalent,
    and the dense run's equivalent is itself (ratio 1)."""
    base, dense, _ = two_runs
    pruned = _simulate(base / "topk", ["--set", "prune-method=topk", "--set", "density=0.05",
                                       "--set", "value-codec=fp16", "--set", "downlink-codec=fp16",
                                       "--set", "model-sparsity=0.5", "--set", "model-prune-end=2"])  # fmt: skip
    assert dense["comm"]["uplink_ratio"] == 1.0
    assert pruned["comm"]["uplink_ratio"] > 1.5  # tiny tensors: framing weighs; ML-1M gives far more
    assert pruned["comm"]["downlink_ratio"] > 1.2
    # same replies in dense form: equal up to the few bytes of metric values
    assert abs(pruned["comm"]["dense_uplink_bytes"] / dense["comm"]["dense_uplink_bytes"] - 1) < 0.01
    assert pruned["rejected"] == 0 and 0 <= pruned["metrics"]["hr@10"] <= 1
    # the served model is pruned and stored sparse
    assert abs(pruned["model"]["sparsity"] - 0.5) < 0.01
    assert pruned["model"]["file_bytes"] < dense["model"]["file_bytes"]


def _client_actors(pid: int) -> list[psutil.Process]:
    """The Ray worker processes running this simulation's ClientApp actors."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "ClientAppActor" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_killed_client_actor_is_restarted_and_the_run_is_unchanged(two_runs, tmp_path: Path):
    """A Ray worker that dies mid-run (the OOM killer, a crash) is restarted and
    its message retried: no reply is lost and the run's figures are those of an
    undisturbed run of the same config and seed."""
    base, undisturbed, _ = two_runs
    out = tmp_path / "run"
    cmd = [sys.executable, "-u", "-m", "prunus.simulations.cli", "simulate", *ARGS, "--out", str(out)]
    log = tmp_path / "simulate.log"
    with log.open("w") as sink:
        run = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "round    1/3" not in log.read_text() or len(actors := _client_actors(run.pid)) < 2:
                assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            before = {actor.pid for actor in actors}
            actors[0].kill()
            restarted = False
            while run.poll() is None and not restarted:  # Ray starts a new worker for the actor
                restarted = any(actor.pid not in before for actor in _client_actors(run.pid))
                time.sleep(0.1)
            assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
        finally:
            run.kill()
    text = log.read_text()
    # killed mid-message (Ray reports the dead worker, the message is retried) or between rounds
    assert "worker died or was killed" in text or restarted, text[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["rejected"] == 0
    assert summary["metrics"] == undisturbed["metrics"] and summary["comm"] == undisturbed["comm"]
    assert re.search(r"client replies failed +0\n", text)  # the final table counts lost replies
