"""A sweep's grid file: which runs to make, resolved and checked up front.

A grid names a base config, fixed overrides, blocks of axes whose cartesian
products are united, seeds, and the dense baseline:

    base = "../configs/ml100k-dense.toml"   # relative to the grid file; optional
    seeds = [0, 1]
    baseline = {prune-method = "none"}     # optional: the setting ratios refer to

    [set]                                  # every point
    rounds = 40

    [[grids]]                              # one block: key -> list of values
    prune-method = ["topk-global"]
    density = [0.1, 0.01]

Every point's Config is built (and so validated by `common.config`) before
any run starts, so a typo in the last block fails at once, naming the key and
the grid file. Points whose resolved configs are equal are run once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunus.common.config import Config, ConfigError, from_mapping, keys, load, read_toml_file

TOP_LEVEL = ("base", "seeds", "baseline", "set", "grids")
# keys the sweep sets itself, per point or per invocation
LAUNCH_KEYS = ("out", "ray-address", "ray-share")
# keys that say how a run is carried out, not what it computes: not part of a point's identity
RUNTIME_KEYS = (*LAUNCH_KEYS, "client-actor-restarts", "engine", "client-state-store")  # (the store: same results)
_RESERVED = {
    "seed": "set seeds with the top-level `seeds` list",
    "out": "the sweep gives every point its own folder",
    "ray-address": "pass --ray-address to prunus sweep",
    "ray-share": "prunus sweep sets it from --jobs",
}


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a setting (overrides of the base) and a seed."""

    name: str
    setting: int  # index of the setting, in grid order (seeds share it)
    seed: int
    overrides: dict[str, Any]  # the block values that make this setting
    config: Config
    baseline: bool

    @property
    def config_hash(self) -> str:
        return config_hash(self.config.to_dict())


def config_hash(values: dict[str, Any]) -> str:
    """Hash of a resolved config (summary.json's `config`), without the keys
    that only say where and how the run was launched."""
    kept = {k: v for k, v in values.items() if k not in RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def load_grid(path: str | Path) -> list[Point]:
    """Expand, resolve and check a grid file; raises ConfigError naming the file and key."""
    path = Path(path)
    grid = read_toml_file(path, "grid file")
    try:
        return _points(path, grid)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _points(path: Path, grid: dict[str, Any]) -> list[Point]:
    unknown = sorted(set(grid) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r} (expected {', '.join(TOP_LEVEL)})")
    base = _base(path, grid.get("base"))
    base = _resolve(_checked(_table(grid, "set"), "[set]"), base, "[set]")
    settings = _settings(base, _blocks(grid.get("grids", [{}])))
    baseline = _baseline_setting(grid.get("baseline"), base, settings)
    seeds = _seeds(grid.get("seeds", [base.runtime.seed]))
    names: set[str] = set()
    points = []
    for seed in seeds:  # seed-major: an interrupted sweep has a whole frontier early
        for index, (overrides, cfg) in enumerate(settings):
            seeded = cfg.replace(seed=seed)
            name = _unique(_name(overrides, seed), seeded, names)
            points.append(Point(name, index, seed, overrides, seeded, index == baseline))
    return points


def _base(path: Path, base: Any) -> Config:
    if base is None:
        return Config()
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a config file name, got {base!r}")
    try:
        return load(path.parent / base)
    except ConfigError as err:
        raise ConfigError(f"base: {err}") from None


def _table(grid: dict[str, Any], key: str) -> dict[str, Any]:
    table = grid.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a table of config keys, got {table!r}")
    return table


def _checked(values: dict[str, Any], where: str) -> dict[str, Any]:
    known = frozenset(keys())
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown config key {key!r} in {where}")
        if key in _RESERVED:
            raise ConfigError(f"{key}: not allowed in {where}: {_RESERVED[key]}")
        if isinstance(value, dict):
            raise ConfigError(f"{key}: expected a value in {where}, got a table")
    return values


def _blocks(blocks: Any) -> list[dict[str, list[Any]]]:
    """Each block as key -> non-empty list of values (a scalar is a list of one)."""
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise ConfigError("grids: expected [[grids]] tables of key = [values]")
    axes = []
    for number, block in enumerate(blocks, 1):
        where = f"[[grids]] #{number}"
        block = _checked(block, where)
        axes.append({key: _axis(key, values, where) for key, values in block.items()})
    return axes


def _axis(key: str, values: Any, where: str) -> list[Any]:
    values = values if isinstance(values, list) else [values]
    if not values:
        raise ConfigError(f"{key}: empty list of values in {where}")
    return values


def _settings(base: Config, blocks: list[dict[str, list[Any]]]) -> list[tuple[dict[str, Any], Config]]:
    """The union of every block's product, in grid order, each resolved config once."""
    settings: list[tuple[dict[str, Any], Config]] = []
    seen: set[Config] = set()
    for number, block in enumerate(blocks, 1):
        for values in itertools.product(*block.values()):
            overrides = dict(zip(block, values))
            cfg = _resolve(overrides, base, f"[[grids]] #{number}")
            if cfg not in seen:
                seen.add(cfg)
                settings.append((overrides, cfg))
    return settings


def _resolve(values: dict[str, Any], base: Config, where: str) -> Config:
    try:
        return from_mapping(values, base, source=where)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _baseline_setting(spec: Any, base: Config, settings: list[tuple[dict[str, Any], Config]]) -> int | None:
    """Index of the one setting whose config has every value of `baseline`."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"baseline: expected a table of config keys, got {spec!r}")
    resolved = _resolve(_checked(spec, "baseline"), base, "baseline").to_dict()
    wanted = {k: resolved[k] for k in spec}
    matches = [i for i, (_, cfg) in enumerate(settings) if all(cfg.to_dict()[k] == v for k, v in wanted.items())]
    if len(matches) != 1:
        found = "; ".join(_name(settings[i][0], None) for i in matches) or "none"
        raise ConfigError(f"baseline: {spec!r} must match exactly one setting, matches {len(matches)} ({found})")
    return matches[0]


def _seeds(seeds: Any) -> list[int]:
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seeds: expected integers, got {seed!r}")
    return list(dict.fromkeys(seeds))


def _name(overrides: dict[str, Any], seed: int | None) -> str:
    """A folder name that reads as the point's settings: `density=0.01_seed=0`."""
    parts = [f"{k}={_text(v)}" for k, v in overrides.items()]
    if seed is not None:
        parts.append(f"seed={seed}")
    return re.sub(r"[^A-Za-z0-9.=+_-]", "-", "_".join(parts)) or "base"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _unique(name: str, cfg: Config, taken: set[str]) -> str:
    """Keep names short enough for a file system and distinct after sanitising."""
    if len(name) > 160 or name in taken:
        name = f"{name[:140]}_{config_hash(cfg.to_dict())[:8]}"
    taken.add(name)
    return name
