"""The run configuration: one typed, validated record of every setting.

Read from a flat TOML file and `--set key=value` overrides (CLI), or from
Flower's run config (`flwr run`); validated before any work starts so that a
typo or a bad value fails at once, naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DATASETS = ("synthetic", "ml-100k", "ml-1m", "ncf-ml-1m", "csv")
PARTITIONS = ("user", "iid", "dirichlet")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")
EVAL_SPLITS = ("test", "validation")


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key."""


def _choice(*options: str) -> dict[str, Any]:
    return {"choices": options}


def _positive() -> dict[str, Any]:
    return {"min": 0, "exclusive": True}


def _non_negative() -> dict[str, Any]:
    return {"min": 0, "exclusive": False}


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Keys are written with dashes (`local-lr`)."""

    # --- data ---
    dataset: str = field(default="synthetic", metadata=_choice(*DATASETS))
    data_dir: str = ""
    min_rating: float = field(default=0.0, metadata=_non_negative())
    synthetic_users: int = field(default=300, metadata=_positive())
    synthetic_items: int = field(default=200, metadata=_positive())
    synthetic_interactions: float = field(default=25.0, metadata=_positive())
    eval_split: str = field(default="test", metadata=_choice(*EVAL_SPLITS))
    eval_negatives: int = field(default=99, metadata=_positive())
    partition: str = field(default="user", metadata=_choice(*PARTITIONS))
    num_silos: int = field(default=10, metadata=_positive())
    dirichlet_alpha: float = field(default=0.5, metadata=_positive())
    # --- model ---
    model: str = field(default="mf", metadata=_choice("mf", "neumf"))
    dim: int = field(default=128, metadata=_positive())
    mlp_layers: str = "64,32,16"
    # --- local training (clients) ---
    loss: str = field(default="bce", metadata=_choice("bce", "bpr"))
    train_negatives: int = field(default=8, metadata=_positive())
    local_epochs: int = field(default=2, metadata=_positive())
    local_lr: float = field(default=5.0, metadata=_positive())
    # cosine decay of the local learning rate to this value at the last round
    # (0 = constant local-lr)
    local_lr_final: float = field(default=0.5, metadata=_non_negative())
    local_optimizer: str = field(default="sgd", metadata=_choice("sgd", "adam"))
    batch_size: int = field(default=256, metadata=_positive())
    l2: float = field(default=0.0, metadata=_non_negative())
    # L1 on the embedding rows a client's batch touches (sparser updates and models)
    l1: float = field(default=0.0, metadata=_non_negative())
    user_refit_epochs: int = field(default=5, metadata=_non_negative())
    user_lr: float = field(default=0.1, metadata=_positive())
    # --- what clients send (pruning + wire format) ---
    prune_method: str = field(default="none", metadata=_choice("none", "topk", "topk-global", "threshold", "randomk", "rows"))
    density: float = field(default=1.0, metadata=_positive())
    density_warmup_rounds: int = field(default=0, metadata=_non_negative())
    prune_threshold: float = field(default=0.0, metadata=_non_negative())
    error_feedback: bool = True
    value_codec: str = field(default="fp32", metadata=_choice("fp32", "fp16", "int8", "ternary"))
    index_codec: str = field(default="auto", metadata=_choice("auto", "bitmap", "delta-varint", "rice", "elias-fano"))
    downlink_codec: str = field(default="fp32", metadata=_choice("fp32", "fp16", "int8"))
    # gradual magnitude pruning of the global model (0 = off)
    model_sparsity: float = field(default=0.0, metadata=_non_negative())
    model_prune_start: int = field(default=1, metadata=_positive())
    model_prune_end: int = field(default=10, metadata=_positive())
    # --- federation (server) ---
    rounds: int = field(default=20, metadata=_positive())
    clients_per_round: int = field(default=50, metadata=_positive())
    server_optimizer: str = field(default="fedavg", metadata=_choice(*SERVER_OPTIMIZERS))
    server_lr: float = field(default=1.0, metadata=_positive())
    server_momentum: float = field(default=0.9, metadata=_non_negative())
    server_beta2: float = field(default=0.99, metadata=_positive())
    server_eps: float = field(default=1e-3, metadata=_positive())
    row_averaging: bool = True
    federated_eval_clients: int = field(default=0, metadata=_non_negative())
    # --- evaluation ---
    eval_every: int = field(default=5, metadata=_positive())
    top_k: int = field(default=10, metadata=_positive())
    full_ranking: bool = False
    fold_in_epochs: int = field(default=10, metadata=_positive())
    # --- centralized reference ---
    # defaults tuned on ML-1M's validation split (see docs/results/ml1m-dense.md)
    centralized_epochs: int = field(default=20, metadata=_positive())
    centralized_lr: float = field(default=0.005, metadata=_positive())
    centralized_batch_size: int = field(default=4096, metadata=_positive())
    # L2 on the rows a batch touches, per positive (centralized averages the
    # batch loss; clients sum it, so their `l2` is on another scale)
    centralized_l2: float = field(default=0.003, metadata=_non_negative())
    # --- runtime ---
    seed: int = 0
    client_num_cpus: float = field(default=1.0, metadata=_positive())
    client_num_gpus: float = field(default=0.0, metadata=_non_negative())
    ray_address: str = ""
    # a client actor whose Ray worker dies (OOM killer, crash) is restarted and
    # its message retried this many times before the reply counts as failed
    client_actor_restarts: int = field(default=3, metadata=_non_negative())
    # runs sharing one Ray cluster (a sweep's --jobs): each creates 1/N of the
    # client actors that fit, so that none waits on actors another one holds
    ray_share: int = field(default=1, metadata=_positive())
    fast_dispatch: bool = True
    out: str = "runs/latest"

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_value(f, getattr(self, f.name))
        _check_layers(self.mlp_layers)
        if self.density > 1:
            raise ConfigError(f"density: must be in (0, 1], got {self.density!r}")
        if self.model_sparsity >= 1:
            raise ConfigError(f"model-sparsity: must be in [0, 1), got {self.model_sparsity!r}")
        if self.model_prune_end < self.model_prune_start:
            raise ConfigError("model-prune-end: must not come before model-prune-start")
        if self.dataset not in ("synthetic",) and not self.data_dir:
            raise ConfigError(f"data-dir: dataset {self.dataset!r} needs a data-dir")
        if self.data_dir and not Path(self.data_dir).exists():
            raise ConfigError(f"data-dir: {self.data_dir!r} does not exist")

    # --- conversions -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat dict with dashed keys (the form of TOML files and run configs)."""
        return {key_of(f.name): getattr(self, f.name) for f in fields(self)}

    def local_lr_at(self, server_round: int) -> float:
        """The round's local learning rate (cosine from local-lr to local-lr-final)."""
        if not self.local_lr_final or self.rounds <= 1:
            return self.local_lr
        progress = min(max(server_round - 1, 0) / (self.rounds - 1), 1.0)
        return self.local_lr_final + 0.5 * (self.local_lr - self.local_lr_final) * (1 + math.cos(math.pi * progress))

    @property
    def dense_uplink(self) -> bool:
        """Clients send plain float32 arrays (the FedAvg baseline) unless they
        prune or quantise; then every tensor goes through `common.codec`."""
        return self.prune_method == "none" and self.value_codec == "fp32"

    @property
    def dense_downlink(self) -> bool:
        """The server broadcasts plain float32 arrays unless it quantises the
        broadcast or prunes the model; then it sends the non-zeros through
        `common.codec`."""
        return self.downlink_codec == "fp32" and self.model_sparsity == 0

    @property
    def mlp_widths(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.mlp_layers.split(","))

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def key_of(name: str) -> str:
    return name.replace("_", "-")


_FIELDS = {key_of(f.name): f for f in fields(Config)}


def _check_value(f: dataclasses.Field, value: Any) -> None:
    key = key_of(f.name)
    expected = _type_of(f)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {value!r}")
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta:
        too_small = value <= meta["min"] if meta["exclusive"] else value < meta["min"]
        if too_small:
            bound = "> 0" if meta["exclusive"] else ">= 0"
            raise ConfigError(f"{key}: must be {bound}, got {value!r}")


def _check_layers(spec: str) -> None:
    try:
        widths = [int(w) for w in spec.split(",")]
    except ValueError:
        raise ConfigError(f"mlp-layers: expected comma-separated integers, got {spec!r}") from None
    if len(widths) < 2 or min(widths) <= 0 or widths[0] % 2:
        raise ConfigError(f"mlp-layers: need >= 2 positive widths, the first even; got {spec!r}")


def _type_of(f: dataclasses.Field) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]


def _coerce(key: str, value: Any) -> Any:
    """Convert a float-typed key's int value (TOML `lr = 1`) and keep the rest."""
    f = _FIELDS[key]
    if _type_of(f) is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def parse_value(key: str, text: str) -> Any:
    """Parse a `--set key=value` string by the key's declared type."""
    if key not in _FIELDS:
        raise ConfigError(f"unknown config key {key!r}")
    kind = _type_of(_FIELDS[key])
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {text!r}") from None


def from_mapping(values: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """Build a Config from dashed keys over `base`; unknown keys are errors."""
    changes = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown config key {key!r} in {source}")
        changes[_FIELDS[key].name] = _coerce(key, value)
    return dataclasses.replace(base or Config(), **changes)


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a TOML file (flat keys) and apply `key=value` overrides, in order.

    A file may start from another with `base = "other.toml"` (relative to
    the file): its keys are read first, then this file's replace them.
    """
    values = _read_toml(Path(path)) if path is not None else {}
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        values[key] = parse_value(key, text.strip())
    return from_mapping(values, source=str(path) if path else "overrides")


def read_toml_file(path: Path, kind: str = "config file") -> dict[str, Any]:
    """A TOML file's tables; a missing or unparsable file is a ConfigError naming it."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{kind} {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{kind} {str(path)!r}: {err}") from None


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"config file {str(path)!r}: 'base' chain loops back to itself")
    values = read_toml_file(path)
    for key, value in values.items():
        if isinstance(value, dict):
            raise ConfigError(f"{key}: tables are not supported; use flat keys in {path}")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a file name in {path}, got {base!r}")
    return {**_read_toml(path.parent / base, (*seen, path.resolve())), **values}


def from_run_config(run_config: dict[str, Any]) -> Config:
    """Config from Flower's run config (pyproject defaults + `--run-config`)."""
    return from_mapping(dict(run_config), source="run config")
