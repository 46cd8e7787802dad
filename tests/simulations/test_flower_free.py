"""The core needs neither Flower nor Ray: with both made unimportable, every
module but the Flower edge imports, and the in-process engine runs a whole
synthetic federation from the command line."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import prunus.client
import prunus.common
import prunus.server
import prunus.simulations

# the modules that speak Flower: its apps and the record conversion at its edge
FLOWER_EDGE = {"prunus.client.app", "prunus.server.app", "prunus.common.flower_records"}

# run first in the child: any import of flwr or ray (or their submodules) fails
BLOCK = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flwr", "ray"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _core_modules() -> list[str]:
    names = []
    for package in (prunus.common, prunus.client, prunus.server, prunus.simulations):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(set(names) - FLOWER_EDGE)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_every_core_module_imports_without_flower_or_ray(tmp_path):
    modules = _core_modules()
    assert len(modules) > 60 and "prunus.server.federation" in modules and "prunus.common.flower_compat" in modules
    code = (f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)\nprint('imported')\n"
            "try:\n    import flwr\nexcept ModuleNotFoundError as err:\n    print(err)\n")  # the block holds
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["imported", "No module named 'flwr' (blocked)"]


def test_the_in_process_engine_runs_a_federation_without_flower_or_ray(tmp_path):
    out = tmp_path / "run"
    argv = ["simulate", "--set", "engine=inprocess", "--set", "synthetic-users=40", "--set", "synthetic-items=60", "--set", "eval-negatives=20",
            "--set", "rounds=2", "--set", "clients-per-round=8", "--set", "dim=8", "--set", "prune-method=topk",
            "--set", "density=0.1", "--set", "value-codec=int8", "--set", "downlink-codec=int8", "--out", str(out)]
    done = _run(f"from prunus.simulations.cli import main\nraise SystemExit(main({argv!r}))\n", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["rejected"] == 0 and summary["failures"] == 0
    assert summary["comm"]["uplink_bytes"] > 0 and 0 <= summary["metrics"]["hr@10"] <= 1
    assert (out / "model.npz").stat().st_size > 0
