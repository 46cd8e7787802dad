"""A container engine (podman or docker) through its command line, every
command it runs written to the transcript with how long it took."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DOCKER = Path(__file__).resolve().parents[1]
PODMAN_CONF = DOCKER / "containers.conf"  # runc, no default ulimits (docker/containers.conf)


class DeployError(RuntimeError):
    """A step of the deployment test did not do what it should; the message says what."""


@dataclass
class Transcript:
    """What ran, in order: commands with their seconds, and the facts checked.

    `short` maps long paths to the names the transcript shows for them."""

    short: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def _show(self, text: str) -> str:
        for path, name in sorted(self.short.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, name)
        return text

    def heading(self, text: str) -> None:
        self._emit(f"\n## {text}")

    def command(self, argv: list[str], seconds: float, note: str = "") -> None:
        self._emit(f"$ {self._show(shlex.join(argv))}\n    ({seconds:.1f} s{', ' + note if note else ''})")

    def fact(self, text: str) -> None:
        self._emit(f"  - {self._show(text)}")

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def write(self, path: Path) -> None:
        path.write_text("\n".join(self.lines).lstrip() + "\n")


def find_engine(name: str | None = None) -> str:
    """The engine's executable: `name`, or podman, else docker; '' if none."""
    for candidate in [name] if name else ["podman", "docker"]:
        exe = shutil.which(candidate)
        if exe:
            return exe
    return ""


class Engine:
    """Runs the engine's commands; podman reads docker/containers.conf."""

    def __init__(self, exe: str, transcript: Transcript) -> None:
        self.exe, self.transcript = exe, transcript
        self.env = dict(os.environ)
        if Path(exe).name == "podman":
            self.env.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))

    def __call__(self, *args: str, check: bool = True, timeout: float = 600, show: bool = True,
                 note: str = "") -> subprocess.CompletedProcess:
        argv = [Path(self.exe).name, *args]
        started = time.perf_counter()
        done = subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if show:
            self.transcript.command(argv, time.perf_counter() - started, note)
        if check and done.returncode != 0:
            raise DeployError(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def start(self, name: str, image: str, command: list[str], *, network: str,
              mounts: dict[Path, str] | None = None, options: list[str] = ()) -> None:
        """A detached container `name` on `network`, reachable there by its name;
        `mounts`: host path -> container path (":ro" appended for read-only)."""
        volumes = [arg for host, inside in (mounts or {}).items() for arg in ("-v", f"{host}:{inside}")]
        self("run", "-d", "--name", name, "--hostname", name, "--network", network, "--init",
             "--user", f"{os.getuid()}:{os.getgid()}", *volumes, *options, image, *command)

    def running(self, name: str) -> bool:
        done = self("inspect", "-f", "{{.State.Running}}", name, check=False, show=False)
        return done.stdout.strip() == "true"

    def logs(self, name: str) -> str:
        done = self("logs", name, check=False, show=False)
        return done.stdout + done.stderr

    def wait(self, name: str, timeout: float) -> int:
        """The container's exit code once it stops (DeployError if it runs past `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running(name):
                done = self("inspect", "-f", "{{.State.ExitCode}}", name, show=False)
                return int(done.stdout.strip())
            time.sleep(1)
        raise DeployError(f"{name} still runs after {timeout:.0f} s")

    def has_image(self, image: str) -> bool:
        return self("image", "inspect", image, check=False, show=False).returncode == 0

    def remove(self, names: list[str], network: str) -> None:
        """Stop and remove the containers and the network, whatever state they are in."""
        existing = [n for n in names if self("container", "inspect", n, check=False, show=False).returncode == 0]
        if existing:
            self("rm", "-f", *existing, check=False)
        if self("network", "inspect", network, check=False, show=False).returncode == 0:
            self("network", "rm", network, check=False)
