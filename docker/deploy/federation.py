"""A Flower Deployment Engine federation across containers.

A SuperLink (TLS, SuperNode authentication, process isolation), the
ServerApp's SuperExec and three SuperNodes (each with its own key pair and
only its own partition file, the ClientApp in a subprocess of the SuperNode),
each in its own container on one container network; the flwr CLI submits
runs from the host through the SuperLink's published port."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.engine import DOCKER, DeployError, Engine
from deploy.runs import follow

REPO = DOCKER.parent
BIN = Path(sys.executable).parent
SILOS = 3
INTRUDER = SILOS + 1  # a fourth key pair, never registered
LINK_NAME = "superlink"  # the SuperLink's name on the network, one its certificate holds (make-certs.sh)


def run_config_text(values: dict) -> str:
    """`values` as flwr's --run-config: key=value, strings quoted, booleans lower case."""
    def text(value) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return json.dumps(value) if isinstance(value, str) else repr(value)

    return " ".join(f"{key}={text(value)}" for key, value in values.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Federation:
    engine: Engine
    work: Path  # certs/, partitions/, runs/, flwr-home/, logs/
    data: Path  # the data set's folder on the host (the ServerApp evaluates centrally)
    tag: str
    network: str
    prefix: str

    def __post_init__(self) -> None:
        self.certs, self.parts, self.runs = self.work / "certs", self.work / "partitions", self.work / "runs"
        self.logs, self.home = self.work / "logs", self.work / "flwr-home"
        self.port = free_port()

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def containers(self) -> list[str]:
        return [self.name(r) for r in ("superlink", "serverapp", *(f"supernode-{k}" for k in range(1, INTRUDER + 1)))]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FLWR_HOME": str(self.home), "PATH": f"{BIN}:{os.environ['PATH']}"}

    def host(self, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        """A command on the host, from the repository root, in the transcript."""
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        self.engine.transcript.command([Path(cmd[0]).name, *cmd[1:]], time.perf_counter() - started)
        if done.returncode != 0:
            raise DeployError(f"{' '.join(cmd)} exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
        return done

    def prepare(self, identity: dict) -> None:
        """Keys for three members and an intruder, the partition files, the CLI's connection."""
        for folder in (self.runs, self.logs, self.home):
            folder.mkdir(parents=True, exist_ok=True)
        self.host(["bash", str(DOCKER / "make-certs.sh"), str(self.certs), str(INTRUDER)])
        settings = [arg for key, value in identity.items() for arg in ("--set", f"{key}={value}")]
        self.host([sys.executable, "-m", "prunus.simulations.cli", "partition", *settings, "--out", str(self.parts)])
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs / "ca.crt"}"\n'
        )

    def up(self) -> None:
        """The SuperLink, the registered keys, the ServerApp's SuperExec, three SuperNodes."""
        ca = {self.certs / "ca.crt": "/certs/ca.crt:ro"}
        self.engine.start(self.name("superlink"), f"prunus-superlink:{self.tag}", [
            "--host=0.0.0.0", "--port=8000", "--isolation=process", "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",  # the image holds what the app needs
            "--ssl-ca-certfile=/certs/ca.crt", "--ssl-certfile=/certs/server.pem", "--ssl-keyfile=/certs/server.key",
        ], network=self.network, mounts={
            **ca, self.certs / "server.pem": "/certs/server.pem:ro", self.certs / "server.key": "/certs/server.key:ro",
        }, options=["-p", f"127.0.0.1:{self.port}:8000",
                    "--network-alias", LINK_NAME])  # fmt: skip
        self._wait_healthy()
        for k in range(1, SILOS + 1):
            self.host([str(BIN / "flwr"), "supernode", "register", str(self.certs / f"supernode-{k}" / "auth_key.pub"),
                       "deploy"])  # fmt: skip
        self.engine.start(self.name("serverapp"), f"prunus-serverapp:{self.tag}", [
            "--runtime-api-address", f"{LINK_NAME}:8000", "--root-certificates", "/certs/ca.crt",
        ], network=self.network, mounts={**ca, self.data: "/data:ro", self.runs: "/app/runs"})  # fmt: skip
        for k in range(1, SILOS + 1):
            self.supernode(k)

    def supernode(self, k: int, extra: list[str] = ()) -> None:
        """SuperNode k with key pair k and the file of partition k-1 (the intruder: partition 0's)."""
        partition = (k - 1) % SILOS
        data_file = f"/partition/partition-{partition}.npz"
        self.engine.start(self.name(f"supernode-{k}"), f"prunus-supernode:{self.tag}", [
            "flower-supernode", f"--superlink={LINK_NAME}:8000", "--root-certificates=/certs/ca.crt",
            "--auth-supernode-private-key=/keys/auth_key",
            "--node-config", f'partition-id={partition} data-file="{data_file}"', *extra,
        ], network=self.network, mounts={
            self.certs / "ca.crt": "/certs/ca.crt:ro", self.certs / f"supernode-{k}": "/keys:ro",
            self.parts / f"partition-{partition}.npz": f"{data_file}:ro",
        })  # fmt: skip

    def _wait_healthy(self, seconds: float = 120) -> None:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health", context=context, timeout=5)
                return
            except OSError:
                time.sleep(1)
        raise DeployError(f"the SuperLink never answered /health:\n{self.engine.logs(self.name('superlink'))[-3000:]}")

    def intruder(self) -> dict:
        """A SuperNode whose key was never registered: refused, and both logs say so."""
        name = self.name(f"supernode-{INTRUDER}")
        self.supernode(INTRUDER, ["--max-retries=2", "--max-wait-time=30"])
        code = self.engine.wait(name, timeout=180)
        own, link = self.engine.logs(name), self.engine.logs(self.name("superlink"))
        return {"exit_code": code, "supernode_says": _line(own, "Failed to activate SuperNode"),
                "superlink_says": _line(link, "No SuperNode found with the given public key")}

    def submit(self, run_config: str, log: Path) -> subprocess.Popen:
        """`flwr run . deploy --stream` from the host: the run's console output goes to `log`."""
        cmd = [str(BIN / "flwr"), "run", ".", "deploy", "--stream", "--run-config", run_config]
        self.engine.transcript.command(["flwr", *cmd[1:]], 0.0, "submitted; its timing below")
        return subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def run(self, run_config: str, out: Path, events: dict[int, Callable[[], None]] | None = None,
            timeout: float = 1800) -> float:
        """Submit a run and wait for it; `events[r]()` is called while round r
        runs (`runs.follow`). Returns the run's seconds."""
        log = self.logs / f"flwr-run-{out.name}.log"
        process = self.submit(run_config, log)
        try:
            seconds = follow(lambda: process.poll() is None, out, events, timeout, f"flwr run {out.name}")
        finally:
            if process.poll() is None:
                process.kill()
        if process.returncode != 0 or not (out / "summary.json").exists():
            raise DeployError(f"flwr run {out.name} failed ({process.returncode}):\n{log.read_text()[-3000:]}\n"
                              f"ServerApp:\n{self.engine.logs(self.name('serverapp'))[-3000:]}")
        self.engine.transcript.fact(f"flwr run ({out.name}) finished in {seconds:.1f} s")
        return seconds

    def save_logs(self) -> None:
        for name in self.containers:
            (self.logs / f"{name}.log").write_text(self.engine.logs(name))


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _line(log: str, needle: str) -> str:
    """The first line of `log` holding `needle` (without colours; a long one's
    end, where the needle is), or '': the fact checked, as the log says it."""
    line = next((ANSI.sub("", line).strip() for line in log.splitlines() if needle in line), "")
    return line if len(line) <= 160 else "..." + line[line.index(needle) - 60:]
