"""Checkpoints of a federation, so a run killed mid-way resumes where it was.

Every `checkpoint-every` rounds the server writes `RUN_DIR/checkpoint.npz`:
the global parameters, the server optimiser's state, the row selection's
state (a bandit's posterior), the leakage meter's linked state (with
`leakage-sample`), the round, the ledger so far and the config.
Sampling needs no state (it is a function of seed and round). The file is
written beside its final name and renamed over it (`os.replace`, atomic), so
a kill at any moment leaves the previous checkpoint or the new one, whole.
Client state (user vectors, error-feedback residuals) is the clients' own:
in a simulation each client keeps versions of it in the run's client-state
store (`client.state_store`); under the Deployment Engine clients keep it.

A checkpoint is trusted no more than a reply: it carries a SHA-256 digest of
its arrays and its metadata (config included), and loading checks the file
(a plain zip of stored npy members, no member larger than the file), the
digest, and every field's type, shape, dtype and range, before anything is
allocated from what it claims; the parameters are checked against the
model's shapes and must be finite (`check_resumable`). Anything else is a
`ConfigError` naming what is wrong: a resume never starts from a damaged or
edited checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from prunus.common.config import Config, ConfigError
from prunus.common.params import Params, array_of, npy_array
from prunus.common.payload import NpyArray
from prunus.server.ledger import Ledger, ReplyLog, RoundLog

CHECKPOINT = "checkpoint.npz"
DIGEST = "digest"  # the member holding SHA-256 over every other member's name and npy bytes
# keys that say how or where a run is carried out, not what it computes:
# a resumed run may change them (a resumed Flower run may even run in process)
RESUMABLE_KEYS = frozenset({"out", "ray-address", "ray-share", "client-actor-restarts", "engine", "fast-dispatch",
                            "fast-submit", "fast-discovery", "reply-wait", "actor-pipeline", "client-batch", "client-num-cpus", "client-num-gpus",
                            "client-state-store", "resume"})  # fmt: skip


@dataclass
class Checkpoint:
    server_round: int  # the last round completed
    params: Params
    optimizer: tuple[Params, Params]
    selection: Params
    ledger: Ledger
    config: dict[str, Any]
    leakage: Params = field(default_factory=dict)  # the leakage meter's linked state (`server.leakage`)


def save(out: Path, checkpoint: Checkpoint) -> Path:
    """Write `out/checkpoint.npz` atomically."""
    meta = {
        "round": checkpoint.server_round,
        "config": checkpoint.config,
        "rounds": [asdict(entry) for entry in checkpoint.ledger.rounds.values()],
        "replies": [asdict(reply) for reply in checkpoint.ledger.replies],
    }
    arrays = {f"params/{k}": v for k, v in checkpoint.params.items()}
    arrays |= {f"optimizer-m/{k}": v for k, v in checkpoint.optimizer[0].items()}
    arrays |= {f"optimizer-v/{k}": v for k, v in checkpoint.optimizer[1].items()}
    arrays |= {f"selection/{k}": v for k, v in checkpoint.selection.items()}
    arrays |= {f"leakage/{k}": v for k, v in checkpoint.leakage.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    arrays[DIGEST] = np.frombuffer(_digest({k: npy_array(v).data for k, v in arrays.items()}), dtype=np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    path, partial = out / CHECKPOINT, out / f".{CHECKPOINT}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load(out: Path) -> Checkpoint:
    """The checkpoint of the run in `out`, every part of it checked; ConfigError
    naming what is wrong if there is none or it is damaged or edited."""
    path = out / CHECKPOINT
    if not path.exists():
        raise ConfigError(f"--resume: {path} does not exist (was the run started with checkpoint-every > 0?)")
    try:
        members = _members(path)
        meta = _meta(members)
        params, m, v, selection, leakage = (_group(members, prefix) for prefix in ("params", "optimizer-m",
                                                                                    "optimizer-v", "selection",
                                                                                    "leakage"))
        ledger = Ledger()
        for entry in _records(meta, "rounds", RoundLog):
            ledger.rounds[entry.round] = entry
        ledger.replies = list(_records(meta, "replies", ReplyLog))
    except ValueError as err:
        raise ConfigError(f"--resume: {path} is not a checkpoint prunus can trust: {err}") from None
    return Checkpoint(meta["round"], params, (m, v), selection, ledger, meta["config"], leakage)


def _digest(members: dict[str, bytes]) -> bytes:
    hasher = hashlib.sha256()
    for name in sorted(members):
        if name != DIGEST:
            for part in (name.encode(), len(members[name]).to_bytes(8, "little"), members[name]):
                hasher.update(part)
    return hasher.digest()


def _members(path: Path) -> dict[str, bytes]:
    """Each member's npy bytes, after the zip's own claims are checked (stored,
    not compressed: no member can claim more than the file holds)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise ValueError(f"member {info.filename!r} is compressed or claims {info.file_size} bytes")
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not an npy array")
            members = {info.filename[:-4]: archive.read(info) for info in infos}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as err:
        raise ValueError(f"not a whole zip archive ({type(err).__name__}: {err})") from None
    if DIGEST not in members or bytes(_array(members, DIGEST, np.uint8)) != _digest(members):
        raise ValueError("its contents do not match their digest (edited or damaged)")
    return members


def _array(members: dict[str, bytes], name: str, dtype: type | None = None) -> np.ndarray:
    value = array_of(NpyArray("", (), members[name]))
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{name} is {value.dtype}, not {np.dtype(dtype)}")
    return value


def _group(members: dict[str, bytes], prefix: str) -> Params:
    out = {}
    for name in members:
        if name.startswith(prefix + "/"):
            value = _array(members, name, np.float32 if prefix == "params" else None)
            if prefix.startswith("optimizer") and value.dtype.kind != "f":
                raise ValueError(f"{name} is {value.dtype}, not a float type")
            if not np.isfinite(value).all():
                raise ValueError(f"{name} holds non-finite values")
            out[name[len(prefix) + 1:]] = value
    return out


def _meta(members: dict[str, bytes]) -> dict[str, Any]:
    try:
        meta = json.loads(bytes(_array(members, "meta", np.uint8)).decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable metadata ({type(err).__name__})") from None
    if not isinstance(meta, dict) or not {"round", "config", "rounds", "replies"} <= set(meta):
        raise ValueError("metadata without round, config, rounds and replies")
    rounds = meta["config"].get("rounds") if isinstance(meta["config"], dict) else None
    if type(meta["round"]) is not int or type(rounds) is not int or not 1 <= meta["round"] <= rounds:
        raise ValueError(f"round {meta['round']!r} is not a round of a {rounds!r}-round run")
    return meta


def _records(meta: dict[str, Any], key: str, kind: type) -> list:
    """The ledger's entries, each a mapping of exactly `kind`'s fields with values of their types."""
    names = {f.name: f.type for f in fields(kind)}
    # a field with a default may be missing (a checkpoint written before it existed)
    required = {f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING}
    if not isinstance(meta[key], list):
        raise ValueError(f"{key} is not a list")
    out = []
    for entry in meta[key]:
        if not isinstance(entry, dict) or not required <= set(entry) <= set(names):
            raise ValueError(f"a {key} entry without exactly the fields {sorted(names)[:4]}...")
        for name, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str, dict)) or (
                    isinstance(value, dict) and not all(isinstance(v, (int, float)) for v in value.values())):
                raise ValueError(f"{key} field {name!r} is a {type(value).__name__} of something else")
            if isinstance(value, float) and not math.isfinite(value) and name not in ("train_loss",):
                raise ValueError(f"{key} field {name!r} is {value}")
        out.append(kind(**entry))
    return out


def check_params(checkpoint: Checkpoint, shapes: dict[str, tuple[int, ...]]) -> None:
    """The checkpoint's model and optimiser state are of the model this config
    builds: the same tensors, each of its shape; ConfigError naming the first that is not."""
    if set(checkpoint.params) != set(shapes):
        raise ConfigError(f"--resume: the checkpoint's parameters {sorted(checkpoint.params)} are not this "
                          f"model's {sorted(shapes)}")
    for group, values in (("params", checkpoint.params), ("optimizer-m", checkpoint.optimizer[0]),
                          ("optimizer-v", checkpoint.optimizer[1])):
        for name, value in values.items():
            if name not in shapes or value.shape != tuple(shapes[name]):
                raise ConfigError(f"--resume: the checkpoint's {group}/{name} has shape {value.shape}, the model "
                                  f"{shapes.get(name)}")
    if any((v < 0).any() for v in checkpoint.optimizer[1].values()):
        raise ConfigError("--resume: the checkpoint's second moments are negative")


def check_resumable(cfg: Config, checkpoint: Checkpoint) -> None:
    """A run resumes only under the config it was checkpointed with (keys of
    how it runs aside; the first key that differs is named), and only into the
    model that config builds (`check_params`)."""
    from prunus.common.datasets import load_split
    from prunus.common.models import model_spec

    if not isinstance(checkpoint.config, dict):
        raise ConfigError("--resume: the checkpoint's config is not a mapping")
    mine = cfg.to_dict()
    for key, value in checkpoint.config.items():
        if key not in RESUMABLE_KEYS and mine.get(key) != value:
            raise ConfigError(f"--resume: the checkpoint was made with {key} = {value!r}, this config has "
                              f"{key} = {mine.get(key)!r}")  # fmt: skip
    if checkpoint.server_round > cfg.federation.rounds:
        raise ConfigError(f"--resume: the checkpoint is after round {checkpoint.server_round} of a "
                          f"{cfg.federation.rounds}-round run")
    check_params(checkpoint, model_spec(cfg.model, load_split(cfg).n_items).shapes)
