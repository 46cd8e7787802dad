"""The Flower internals prunus relies on are pinned to one Flower version."""

import subprocess
import sys
from importlib.metadata import distribution

from prunus.common import flower_compat


def test_another_flower_version_fails_at_import_naming_both_versions():
    code = (
        "import importlib.metadata as m; real = m.version\n"
        "m.version = lambda name: '9.9.9' if name == 'flwr' else real(name)\n"
        "import prunus.common.flower_compat\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "flwr 9.9.9 is installed" in result.stderr and flower_compat.SUPPORTED_FLOWER in result.stderr


def test_the_distribution_installs_one_namespace_and_no_top_level_packages():
    tops = {entry.split("/")[0] for entry in distribution("prunus").read_text("top_level.txt").split()} \
        if distribution("prunus").read_text("top_level.txt") else set()
    for name in ("common", "client", "server", "simulations"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd="/")
        assert result.returncode != 0, f"a top-level {name!r} package is importable"
    assert tops <= {"prunus"}


def test_clean_actor_shutdown_can_be_switched_on_and_off():
    from flwr.simulation.ray_transport import ray_actor

    flower_compat.enable_clean_actor_shutdown(False)
    original = ray_actor.BasicActorPool.terminate_all_actors
    flower_compat.enable_clean_actor_shutdown()
    assert ray_actor.BasicActorPool.terminate_all_actors is not original
    flower_compat.enable_clean_actor_shutdown(False)
    assert ray_actor.BasicActorPool.terminate_all_actors is original


def test_every_package_folder_is_in_the_distribution():
    """A subpackage missing from pyproject's list would be left out of a wheel
    (and would make an editable install fall back to the project folder)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"prunus." + ".".join(init.parent.relative_to(root).parts)
             for top in ("common", "client", "server", "simulations") for init in (root / top).rglob("__init__.py")}
    assert found == listed
