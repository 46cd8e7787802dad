"""The install: where the locks' torch comes from, checked against the Makefile.

The locks pin torch's CPU build, `torch==2.13.0+cpu`, a local version that PyPI
does not hold: only the PyTorch CPU index and this image's wheel cache do.

- the Makefile names that index (TORCH_INDEX) and every lock names the same one
  in an `--extra-index-url` line, which pip honours; the three locks pin the
  same +cpu torch, the version of constraints*.txt;
- `make install`, `install-dev` and `test-compat` install torch first, alone,
  from the lock's lines, then the rest of the lock without the index line (so
  pip does not ask the PyTorch index about ~100 other packages); TORCH=...
  replaces the lock's pin (macOS);
- pyproject.toml's [tool.uv] sends torch to the same index, for the runtime
  environment `flwr run` builds with `uv sync`, and the variable the README
  names to skip that install does turn it off in Flower's SuperLink;
- the FAB `flwr run .` builds carries requirements.lock's pins as uv
  constraints, and Flower's own installer, run on that FAB as a dry run,
  would install exactly the lock (torch's +cpu build from the CPU index, no
  CUDA wheel); that needs PyPI and is skipped, with its reason, without it;
- the Makefile's torch command resolves here from the sources this machine has
  (a dry run: nothing installed), and the index lists a Linux x86-64 wheel of
  the pin; that check needs the network and is skipped, with its reason, where
  the index cannot be reached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = REPO / "Makefile"
LOCKS = [REPO / name for name in ("requirements.lock", "requirements-dev.lock", "requirements-dev-flwr142.lock")]
CONSTRAINTS = [REPO / "constraints.txt", REPO / "constraints-flwr142.txt"]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", MAKEFILE.read_text(), re.M)
    assert match, f"the Makefile sets no {name}"
    return match.group(1)


def _lock_lines(lock: Path, pattern: str) -> list[str]:
    return [line.strip() for line in lock.read_text().splitlines() if re.match(pattern, line)]


def _torch_pin(lock: Path) -> str:
    (line,) = _lock_lines(lock, r"torch==")
    return line.removeprefix("torch==")


def _make_dry_run(*args: str) -> list[str]:
    """`make -n` in the repository: the commands, not run (no outer make's flags)."""
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _torch_commands(lines: list[str]) -> list[str]:
    return [line for line in lines if "install --no-deps --retries" in line]


def _rest_commands(lines: list[str]) -> list[str]:
    return [line for line in lines if "-r /dev/stdin" in line]


# --- the sources, named once and agreed on ---------------------------------------------------


def test_the_makefile_names_the_pytorch_cpu_index_and_every_lock_names_the_same():
    assert _makefile_variable("TORCH_INDEX") == CPU_INDEX
    for lock in LOCKS:
        assert _lock_lines(lock, r"--extra-index-url") == [f"--extra-index-url {CPU_INDEX}"], lock.name
        assert not _lock_lines(lock, r"--(index-url|find-links|no-index)"), lock.name  # PyPI stays the index


def test_the_three_locks_pin_the_same_cpu_build_of_the_constraints_torch():
    pins = {lock.name: _torch_pin(lock) for lock in LOCKS}
    assert len(set(pins.values())) == 1, pins
    version = Version(pins["requirements.lock"])
    assert version.local == "cpu", pins
    for constraints in CONSTRAINTS:
        (line,) = _lock_lines(constraints, r"torch==")
        assert Version(line.removeprefix("torch==")) == Version(version.public), constraints.name


def test_flwr_runs_uv_sync_takes_linux_torch_from_the_same_index():
    uv = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]
    (index,) = [entry for entry in uv["index"] if entry["name"] == "pytorch-cpu"]
    assert index["url"] == _makefile_variable("TORCH_INDEX") and index["explicit"] is True
    assert uv["sources"]["torch"] == [{"index": "pytorch-cpu", "marker": "sys_platform == 'linux'"}]


# --- what make runs ----------------------------------------------------------------------------


def test_each_install_takes_torch_alone_from_its_lock_then_the_rest_without_the_index():
    lines = _make_dry_run("install", "install-dev", "test-compat")
    torch, rest = _torch_commands(lines), _rest_commands(lines)
    assert len(torch) == len(rest) == 3, lines
    for lock, torch_command, rest_command in zip(LOCKS, torch, rest):
        assert torch_command.endswith(f"--extra-index-url {CPU_INDEX} torch=={_torch_pin(lock)}"), torch_command
        assert rest_command.startswith(f"grep -vE '^(--extra-index-url|torch==)' {lock.name} |"), rest_command
    for torch_command, rest_command in zip(torch, rest):  # torch before the rest, into the same venv
        assert lines.index(torch_command) < lines.index(rest_command)
        assert torch_command.split()[0] == rest_command.split("| ")[1].split()[0]


def test_torch_replaces_the_locks_pin_for_macos():
    lines = _make_dry_run("install", "TORCH=torch==2.13.0")
    (torch_command,) = _torch_commands(lines)
    assert torch_command.endswith("--retries 2 torch==2.13.0") and CPU_INDEX not in torch_command
    assert len(_rest_commands(lines)) == 1  # the rest of the lock as without TORCH


def test_the_variable_the_readme_names_turns_the_superlinks_runtime_install_off(monkeypatch):
    """On by default (why [tool.uv] names the CPU index); off runs the app in the lock's .venv."""
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    monkeypatch.delenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", raising=False)
    assert _parse_args_run_superlink().parse_args(["--insecure", "--simulation"]).runtime_dependency_install
    monkeypatch.setenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    assert not _parse_args_run_superlink().parse_args(["--insecure", "--simulation"]).runtime_dependency_install


def test_the_readme_says_where_torch_comes_from_and_what_to_run_on_macos():
    readme = (REPO / "README.md").read_text()
    assert CPU_INDEX in readme and "make demo TORCH=torch==2.13.0" in readme
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 flwr run ." in readme


# --- the pin resolves --------------------------------------------------------------------------


def test_the_makefiles_torch_command_resolves_here_without_installing(tmp_path):
    """The command `make install` runs for torch, as a dry run with this machine's pip sources."""
    pin = _torch_pin(LOCKS[0])
    cache = Path(re.search(r"--find-links (\S+)", MAKEFILE.read_text()).group(1))  # this image's wheels, for `make lock`
    if not list(cache.glob(f"torch-{pin}-*.whl")):
        pytest.skip(f"no torch {pin} wheel in {cache}: resolving it would download it (the index test covers it)")
    (command,) = _torch_commands(_make_dry_run("install"))
    args = command.split(" install ", 1)[1].split()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--find-links", str(cache), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Would install torch-{pin}" in done.stdout, done.stdout


def test_the_pytorch_cpu_index_holds_a_linux_x86_64_wheel_of_the_pin():
    pin = Version(_torch_pin(LOCKS[0]))
    url = f"{_makefile_variable('TORCH_INDEX')}/torch/"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        pytest.skip(f"{url} cannot be reached from here ({exc}); the dry run above covers this machine's sources")
    tags = _wheel_tags(page, pin)
    assert any(t.startswith("cp311-cp311-manylinux") and t.endswith("x86_64") for t in tags), sorted(tags)


def _wheel_tags(page: str, pin: Version) -> set[str]:
    """The tags of the wheels of version `pin` that a simple-index page lists."""
    tags = set()
    for name in re.findall(r">\s*(torch-[^<\s]+\.whl)\s*<", page):
        _, version, _, wheel_tags = parse_wheel_filename(urllib.request.unquote(name))
        if version == pin:
            tags |= {str(tag) for tag in wheel_tags}
    return tags


def test_wheel_tags_reads_a_simple_index_page():
    page = (
        '<a href="/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl#sha256=0">'
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl</a><br/>\n"
        '<a href="/whl/cpu/torch-2.13.0%2Bcpu-cp312-cp312-win_amd64.whl">torch-2.13.0%2Bcpu-cp312-cp312-win_amd64.whl</a>\n'
        '<a href="/whl/cpu/torch-2.12.0%2Bcpu-cp311-cp311-manylinux_2_28_aarch64.whl">'
        "torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl</a>\n"
    )
    assert _wheel_tags(page, Version("2.13.0+cpu")) == {"cp311-cp311-manylinux_2_28_x86_64", "cp312-cp312-win_amd64"}


# --- the Flower App installs the lock ----------------------------------------------------------


def _lock_pins(lock: Path) -> set[str]:
    return {line.split()[0] for line in _lock_lines(lock, r"[A-Za-z0-9].*==")}


@pytest.fixture
def installed_app(tmp_path, monkeypatch) -> Path:
    """The FAB `flwr run .` builds from this checkout, installed as Flower's SuperLink installs it."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.install import install_from_fab

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    return install_from_fab(build_fab_from_disk(REPO), skip_prompt=True)


def test_the_fab_carries_the_locks_pins_as_uv_constraints(installed_app):
    from packaging.requirements import Requirement

    uv = tomllib.loads((installed_app / "pyproject.toml").read_text())["tool"]["uv"]
    constraints = [Requirement(line) for line in uv["constraint-dependencies"]]
    linux = {str(c).split(";")[0] for c in constraints if c.marker is None or c.marker.evaluate({"sys_platform": "linux"})}
    assert linux == _lock_pins(LOCKS[0])
    pin = Version(_torch_pin(LOCKS[0]))
    (elsewhere,) = [c for c in constraints if c.marker and not c.marker.evaluate({"sys_platform": "linux"})]
    assert (elsewhere.name, str(elsewhere.specifier)) == ("torch", f"=={pin.public}")  # PyPI's wheel: macOS, Windows


def test_make_lock_writes_those_constraints_from_the_lock_and_no_compile_reads_them(tmp_path):
    """From an emptied list, `make lock`'s rewrite gives back pyproject.toml as committed; every `uv pip
    compile` passes --no-config (the constraints would hold a new lock to the old pins)."""
    lines = _make_dry_run("lock")
    compiles = [line for line in lines if "uv pip compile" in line]
    assert len(compiles) == 3 and all("--no-config" in line for line in compiles), compiles
    (rewrite,) = [line for line in lines if line.startswith("awk") and "constraint-dependencies" in line]
    committed = (REPO / "pyproject.toml").read_text()
    emptied = re.sub(r"(?ms)^(constraint-dependencies = \[\n).*?^\]", r"\1]", committed)
    assert emptied != committed
    (tmp_path / "pyproject.toml").write_text(emptied)
    shutil.copy(LOCKS[0], tmp_path / LOCKS[0].name)
    subprocess.run(["bash", "-c", rewrite], cwd=tmp_path, check=True, timeout=60)
    assert (tmp_path / "pyproject.toml").read_text() == committed


def _local_cpu_index(tmp_path: Path, pin: str) -> str:
    """A simple-index page for this machine's wheel of the pin, standing in for an unreachable CPU index."""
    cache = Path(re.search(r"--find-links (\S+)", MAKEFILE.read_text()).group(1))
    wheels = sorted(cache.glob(f"torch-{pin}-*.whl"))
    if not wheels:
        pytest.skip(f"{CPU_INDEX} cannot be reached and {cache} holds no torch {pin} wheel")
    page = tmp_path / "cpu-index" / "torch" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("".join(f'<a href="{w.as_uri()}">{w.name}</a>\n' for w in wheels))
    return page.parents[1].as_uri()


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        print(url, exc)
        return False


def test_flowers_installer_would_install_exactly_the_lock_from_the_fab(installed_app, tmp_path, monkeypatch):
    """Flower's own `uv sync` of the installed FAB as a dry run: the lock's pins, torch's +cpu from the CPU index.

    Where the CPU index cannot be reached, its URL in the installed app points to a page for this
    machine's wheel of the pin instead (the one change); PyPI serves the rest.
    """
    import tomli_w
    from flwr.supercore.superexec import dependency_installer as installer

    if not _reachable("https://pypi.org/simple/"):
        pytest.skip("PyPI cannot be reached: uv cannot resolve the app's environment")
    pin = _torch_pin(LOCKS[0])
    pyproject = installed_app / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text())
    (index,) = [entry for entry in config["tool"]["uv"]["index"] if entry["name"] == "pytorch-cpu"]
    if not _reachable(f"{CPU_INDEX}/torch/"):
        index["url"] = _local_cpu_index(tmp_path, pin)
        pyproject.write_text(tomli_w.dumps(config))

    syncs: list[set[str]] = []

    def dry_run(cmd, *args, installed_packages=None, **kwargs):
        if cmd[2:4] == ["uv", "sync"]:
            cmd, installed_packages = [*cmd, "--dry-run"], set()
            syncs.append(installed_packages)
        return run_cmd(cmd, *args, installed_packages=installed_packages, **kwargs)

    run_cmd = installer._run_cmd
    monkeypatch.setattr(installer, "_run_cmd", dry_run)
    monkeypatch.setattr(installer, "_activate_runtime_env", lambda env: None)  # a dry run makes no environment
    monkeypatch.setattr(installer, "_register_runtime_env_cleanup", lambda env: None)
    installer.install_app_dependencies(installed_app, run_id=1)

    (installed,) = syncs
    assert f"torch=={pin}" in installed and not any(p.startswith("nvidia-") for p in installed), sorted(installed)
    flwr_pin = {p for p in _lock_pins(LOCKS[0]) if p.startswith("flwr==")}  # Flower keeps the running one
    assert installed == _lock_pins(LOCKS[0]) - flwr_pin

    done = subprocess.run([sys.executable, "-m", "uv", "lock"], cwd=installed_app, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    torches = [p for p in tomllib.loads((installed_app / "uv.lock").read_text())["package"] if p["name"] == "torch"]
    sources = {p["version"]: p["source"]["registry"] for p in torches}
    assert sources == {pin: index["url"].removeprefix("file://"), Version(pin).public: "https://pypi.org/simple"}
