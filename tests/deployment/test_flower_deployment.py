"""A real federation under Flower's Deployment Engine, on loopback.

One SuperLink (TLS, SuperNode authentication), three registered SuperNodes,
each holding only its own partition file, and a pruned run submitted with
`flwr run`, as a user would on three hosts; plus a fourth SuperNode whose key
was never registered, which the SuperLink must refuse. Certificates and keys
come from the repository's own script (`docker/make-certs.sh`). Every process
is bound to 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
SILOS = 3
RUN_CONFIG = (f'num-silos={SILOS} partition="iid" rounds=2 clients-per-round={SILOS} eval-every=1 '
              'federated-eval-clients=0 dim=16 prune-method="topk" density=0.05 value-codec="fp16" '
              'checkpoint-every=1')  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"port {port} never opened:\n{log.read_text()[-3000:]}")


class Processes:
    """Background processes in their own sessions, so stopping one stops its children."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.started = env, logs, []

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        process = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _flwr(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "flwr"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"flwr {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    base = tmp_path_factory.mktemp("deploy")
    certs, parts, out = base / "certs", base / "parts", base / "out"
    subprocess.run(["bash", str(ROOT / "docker" / "make-certs.sh"), str(certs), str(SILOS + 1)], check=True, capture_output=True)
    partition = [sys.executable, "-m", "prunus.simulations.cli", "partition", "--set", f"num-silos={SILOS}",
                 "--set", "partition=iid", "--out", str(parts)]  # fmt: skip
    subprocess.run(partition, cwd=ROOT, check=True, capture_output=True)

    port = _free_port()
    home = base / "flwr-home"  # Flower's CLI config, apart from the user's ~/.flwr
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "{LOOPBACK}:{port}"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    processes = Processes(env, base)
    try:
        superlink = processes.start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(certs / "ca.crt"),
            "--ssl-certfile", str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key"),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--host", LOOPBACK, "--port", str(port)])  # fmt: skip
        _wait_for_port(port, superlink, base / "superlink.log")
        for k in range(1, SILOS + 1):  # register the three members' public keys, not the fourth
            _flwr(["supernode", "register", str(certs / f"supernode-{k}" / "auth_key.pub"), "loopback"], env)

        def supernode(k: int, partition_id: int, extra: list[str] = ()) -> subprocess.Popen:
            data_file = parts / f"partition-{partition_id}.npz"
            return processes.start(f"supernode-{k}", [
                str(BIN / "flower-supernode"), "--superlink", f"{LOOPBACK}:{port}",
                "--root-certificates", str(certs / "ca.crt"),
                "--auth-supernode-private-key", str(certs / f"supernode-{k}" / "auth_key"),
                "--node-config", f'partition-id={partition_id} data-file="{data_file}"',
                "--host", LOOPBACK, "--port", str(_free_port()), *extra])  # fmt: skip

        for k in range(1, SILOS + 1):
            supernode(k, partition_id=k - 1)
        intruder = supernode(SILOS + 1, partition_id=0, extra=["--max-retries", "2", "--max-wait-time", "20"])
        intruder_code = intruder.wait(timeout=120)

        run = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "loopback", "--stream", "--run-config", f'{RUN_CONFIG} out="{out}"'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        yield {"out": out, "run": run, "intruder_code": intruder_code, "processes": processes, "env": env}
    finally:
        processes.stop_all()


def test_flwr_run_trains_a_pruned_federation_and_writes_metrics_and_ledger(federation):
    run = federation["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = federation["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["prune-method"] == "topk" and summary["rounds"] == 2
    assert 0.0 <= summary["metrics"]["hr@10"] <= 1.0 and 0.0 <= summary["metrics"]["ndcg@10"] <= 1.0
    comm = summary["comm"]
    assert comm["uplink_bytes"] > 0 and comm["uplink_ratio"] > 2.0  # pruned replies, counted from the wire
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["uplink_bytes"].sum() == comm["uplink_bytes"]
    assert (rounds.loc[rounds["round"] > 0, "replies"] == SILOS).all()
    clients = pd.read_csv(out / "clients.csv")
    assert sorted(clients["partition"].unique()) == list(range(SILOS)) and (clients["status"] == "accepted").all()
    assert (out / "model.npz").exists() and summary["rejected"] == 0


def test_a_supernode_with_an_unregistered_key_is_refused(federation):
    processes = federation["processes"]
    assert federation["intruder_code"] != 0
    assert "Failed to activate SuperNode" in processes.log(f"supernode-{SILOS + 1}")
    assert "No SuperNode found with the given public key" in processes.log("superlink")


def test_the_serverapp_resumes_from_its_checkpoint(federation):
    """`resume = true`: the ServerApp takes up the checkpoint in `out` (here the
    last round's, so there is nothing left to train) and ends with the same model
    and ledger; clients keep their own state in their SuperNodes."""
    out = federation["out"]
    before = json.loads((out / "summary.json").read_text())
    with np.load(out / "model.npz") as saved:
        model = {name: saved[name] for name in saved.files}
    run = subprocess.run(
        [str(BIN / "flwr"), "run", ".", "loopback", "--stream", "--run-config", f'{RUN_CONFIG} resume=true out="{out}"'],
        cwd=ROOT, env=federation["env"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = json.loads((out / "summary.json").read_text())
    assert after["comm"] == before["comm"] and after["metrics"] == before["metrics"]
    with np.load(out / "model.npz") as saved:
        assert set(saved.files) == set(model) and all(np.array_equal(saved[n], model[n]) for n in model)
