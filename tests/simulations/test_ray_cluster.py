"""`prunus simulate` attached to a two-node Ray cluster started on loopback.

A head and a second node, each with one CPU of its own, joined on 127.0.0.1;
with one CPU per client actor Flower puts one actor on each node, so the
replies must come from both. Each node runs `ray start --block` in its own
process, so stopping that process stops exactly the node this test started
(`ray stop` would stop every Ray on the machine), and the head keeps its
files in a temporary folder of its own, so the address it records there is
gone afterwards and no later `ray.init()` on this machine can find it.

Ray 2.55 turns `--node-ip-address 127.0.0.1` into the address of the
machine's own interface (`resolve_ip_for_localhost`), so the nodes advertise
that address; nothing outside this machine is involved.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [RAY, "start", "--block", "--node-ip-address", LOOPBACK, "--num-cpus", "1", "--num-gpus", "0",
           "--object-store-memory", str(80 * 1024**2), "--disable-usage-stats", *args]  # fmt: skip
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(node: subprocess.Popen) -> None:
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


def _cluster_nodes(address: str) -> list[str]:
    """Node ids of the live nodes, asked of the cluster by a separate driver."""
    code = (
        "import json, ray; ray.init(address=%r, logging_level='ERROR');"
        "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % address
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray-logs")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    address = f"{LOOPBACK}:{port}"
    head = _start_node(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp_dir],
                       logs / "head.log")  # fmt: skip
    nodes = [head]
    try:
        deadline = time.monotonic() + 120
        while True:  # the head must accept drivers before the worker joins
            try:
                _cluster_nodes(address)
                break
            except AssertionError:
                if time.monotonic() > deadline or head.poll() is not None:
                    raise RuntimeError((logs / "head.log").read_text()[-3000:]) from None
                time.sleep(2)
        nodes.append(_start_node(["--address", address], logs / "worker.log"))
        while len(_cluster_nodes(address)) < 2:
            if time.monotonic() > deadline or nodes[1].poll() is not None:
                raise RuntimeError((logs / "worker.log").read_text()[-3000:])
            time.sleep(2)
        yield address
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_simulation_on_a_two_node_cluster_uses_both_nodes(ray_cluster, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", "--ray-address", ray_cluster,
           "--set", "synthetic-users=30", "--set", "synthetic-items=40", "--set", "eval-negatives=20",
           "--set", "dim=8", "--set", "rounds=2", "--set", "clients-per-round=12",
           "--set", "partition=user", "--set", "client-num-cpus=1",
           "--set", "prune-method=topk", "--set", "density=0.1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    cluster = set(_cluster_nodes(ray_cluster))
    clients = pd.read_csv(out / "clients.csv")
    train = clients[clients["kind"] == "train"]
    assert len(train) == 2 * 12 and (train["status"] == "accepted").all()
    assert set(train["ray_node"]) == cluster  # replies from both nodes, and only from this cluster
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["placement"]["ray_nodes"]) == cluster
    assert summary["comm"]["uplink_ratio"] > 1.0


SWEEP = """
seeds = [0, 1, 2]
baseline = {prune-method = "none"}
[set]
synthetic-users = 30
synthetic-items = 40
eval-negatives = 20
dim = 8
rounds = 4
clients-per-round = 12
eval-every = 2
partition = "user"
[[grids]]
prune-method = ["none"]
"""


def test_sweep_points_run_side_by_side_on_one_cluster(ray_cluster, tmp_path):
    """Three simulations at once on a 2-CPU cluster. Sized by Flower alone, each
    would ask for both CPUs' actors, get part of them, and wait on the others'
    (all points ran into their timeout, before `ray-share`)."""
    grid, out = tmp_path / "grid.toml", tmp_path / "sweep"
    grid.write_text(SWEEP)
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "sweep", str(grid), "--out", str(out), "--jobs", "3",
           "--ray-address", ray_cluster, "--point-timeout", "240"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, start_new_session=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cluster = set(_cluster_nodes(ray_cluster))
    for folder in (out / "runs").iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["config"]["ray-share"] == 3 and summary["failures"] == 0
        assert set(summary["placement"]["ray_nodes"]) <= cluster
    assert len(pd.read_csv(out / "results.csv")) == 3
