"""A Ray cluster across containers: a head and two workers (one CPU each, so
one client actor each), and `prunus simulate --ray-address` run by a driver
container that joins the cluster as a node without CPUs (a Ray driver must
run on a node). Every node mounts the data read-only and the runs folder at
the same path: a simulated client keeps its state in the run's folder
(`client-state/`), wherever its actor runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.engine import DeployError, Engine
from deploy.runs import follow

WORKERS = 2


@dataclass
class RayCluster:
    engine: Engine
    work: Path
    data: Path
    tag: str
    network: str
    prefix: str

    def __post_init__(self) -> None:
        self.runs, self.logs = self.work / "runs", self.work / "logs"
        self.image = f"prunus-supernode:{self.tag}"

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def head(self) -> str:
        return self.name("ray-head")

    @property
    def containers(self) -> list[str]:
        return [self.head, *(self.worker(k) for k in range(1, WORKERS + 1)), self.name("driver")]

    def worker(self, k: int) -> str:
        return self.name(f"ray-worker-{k}")

    def _node(self, name: str, command: list[str]) -> None:
        self.engine.start(name, self.image, command, network=self.network, options=["--shm-size=1g"],
                          mounts={self.data: "/data:ro", self.runs: "/app/runs"})

    def up(self) -> None:
        self.runs.mkdir(parents=True, exist_ok=True)
        self._node(self.head, ["ray", "start", "--head", "--block", "--port=6379", "--num-cpus=1", "--num-gpus=0",
                               "--include-dashboard=false", "--disable-usage-stats"])  # fmt: skip
        for k in range(1, WORKERS + 1):
            self.start_worker(k)
        self.wait_for_nodes(1 + WORKERS)

    def start_worker(self, k: int) -> None:
        self._node(self.worker(k), ["ray", "start", f"--address={self.head}:6379", "--block", "--num-cpus=1",
                                    "--num-gpus=0", "--disable-usage-stats"])  # fmt: skip

    def alive_nodes(self) -> int:
        probe = ("import ray; ray.init(address='auto', log_to_driver=False, logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")  # fmt: skip
        done = self.engine("exec", self.head, "python", "-c", probe, check=False, show=False, timeout=120)
        lines = done.stdout.strip().splitlines()
        return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0

    def wait_for_nodes(self, n: int, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.alive_nodes() >= n:
                self.engine.transcript.fact(f"Ray cluster: {n} nodes alive")
                return
            time.sleep(2)
        raise DeployError(f"the Ray cluster never had {n} nodes alive:\n{self.engine.logs(self.head)[-3000:]}")

    def simulate(self, args: list[str], out: Path, events: dict[int, Callable[[], None]] | None = None,
                 timeout: float = 1800, check: bool = True) -> tuple[int, float]:
        """`prunus simulate ARGS --ray-address HEAD:6379` in the driver container;
        `events[r]()` once round r-1 is in out/rounds.csv. Returns (exit code, seconds)."""
        driver = self.name("driver")
        self.engine("rm", "-f", driver, check=False, show=False)
        join = f"ray start --address={self.head}:6379 --num-cpus=0 --num-gpus=0 --disable-usage-stats >/dev/null"
        command = ["bash", "-c", f'{join} && exec "$@"', "driver",
                   "prunus", "simulate", *args, "--ray-address", f"{self.head}:6379"]  # fmt: skip
        self._node(driver, command)
        seconds = follow(lambda: self.engine.running(driver), out, events, timeout, f"prunus simulate ({out.name})")
        code = self.engine.wait(driver, timeout=30)
        (self.logs / f"driver-{out.name}{'-resumed' if '--resume' in args else ''}.log").write_text(
            self.engine.logs(driver))
        if check and (code != 0 or not (out / "summary.json").exists()):
            raise DeployError(f"prunus simulate ({out.name}) exited {code}:\n{self.engine.logs(driver)[-3000:]}")
        self.engine.transcript.fact(f"prunus simulate ({out.name}) exited {code} after {seconds:.1f} s")
        return code, seconds

    def save_logs(self) -> None:
        for name in self.containers[:-1]:
            (self.logs / f"{name}.log").write_text(self.engine.logs(name))
