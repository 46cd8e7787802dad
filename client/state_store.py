"""A simulated client's state on disk, so a checkpointed run can resume it.

In a simulation client state (user vectors, error-feedback residuals) lives
in Flower's `context.state`, in the memory of Ray actors that die with the
run. With `checkpoint-every = k` each client also writes its state after
every training round it takes part in, as `RUN_DIR/client-state/<partition>/
<round>.npz` (written beside its name and renamed, so never half-written),
and a client that finds no state in memory (a resumed run) reads the latest
version from no later than the last checkpoint the server can have written
before the current round: round k * floor((round - 1) / k). Versions the
resumed run will not need again are deleted as new ones are written.
Under the Deployment Engine clients keep their own state and this is off.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from flwr.app import RecordDict

from prunus.common.config import Config
from prunus.common.params import from_record, to_record

STORE = "client-state"


def store_of(cfg: Config) -> Path | None:
    """The run's client-state store, or None when the run does not checkpoint."""
    return Path(cfg.runtime.out) / STORE if cfg.runtime.checkpoint_every else None


def last_checkpoint(cfg: Config, server_round: int) -> int:
    """The last round the server can have checkpointed before `server_round`."""
    every = cfg.runtime.checkpoint_every
    return every * ((server_round - 1) // every)


def _versions(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.npz")) if folder.exists() else []


def load(store: Path, partition: int, upto: int) -> RecordDict | None:
    """The partition's latest state written in round `upto` or before."""
    folder = store / str(partition)
    usable = [v for v in _versions(folder) if v <= upto]
    if not usable:
        return None
    records: dict[str, dict[str, np.ndarray]] = {}
    with np.load(folder / f"{usable[-1]}.npz", allow_pickle=False) as data:
        for key in data.files:
            record, name = key.split("/", 1)
            records.setdefault(record, {})[name] = data[key]
    return RecordDict({record: to_record(arrays) for record, arrays in records.items()})


def save(store: Path, partition: int, server_round: int, state: RecordDict, upto: int) -> None:
    """Write the state after `server_round`; drop versions older than the one a
    resume from checkpoint `upto` (or any later) would read."""
    folder = store / str(partition)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"{record}/{name}": value for record in state for name, value in from_record(state[record]).items()}
    partial = folder / f".{server_round}.{os.getpid()}.partial"
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(partial, folder / f"{server_round}.npz")
    versions = _versions(folder)
    needed = [v for v in versions if v <= upto]
    for version in versions:
        if needed and version < needed[-1]:
            (folder / f"{version}.npz").unlink(missing_ok=True)


def restore_if_empty(cfg: Config, state: RecordDict, partition: int, server_round: int) -> None:
    """Fill an empty `state` (a resumed run's fresh client) from the store."""
    store = store_of(cfg)
    if store is None or len(state):
        return
    loaded = load(store, partition, last_checkpoint(cfg, server_round))
    for record in loaded or {}:
        state[record] = loaded[record]


def persist(cfg: Config, state: RecordDict, partition: int, server_round: int) -> None:
    """Keep the state a training round left, when the run checkpoints."""
    store = store_of(cfg)
    if store is not None and len(state):
        save(store, partition, server_round, state, last_checkpoint(cfg, server_round))
