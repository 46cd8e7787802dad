"""Checkpoints of a federation, so a run killed mid-way resumes where it was.

Every `checkpoint-every` rounds the server writes `RUN_DIR/checkpoint.npz`:
the global parameters, the server optimiser's state, the row selection's
state (a bandit's posterior), the round, the ledger so far and the config.
Sampling needs no state (it is a function of seed and round). The file is
written beside its final name and renamed over it (`os.replace`, atomic), so
a kill at any moment leaves the previous checkpoint or the new one, whole.
Client state (user vectors, error-feedback residuals) is the clients' own:
in a simulation each client keeps versions of it in the run's client-state
store (`client.state_store`); under the Deployment Engine clients keep it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prunus.common.config import Config, ConfigError
from prunus.common.params import Params
from prunus.server.ledger import Ledger, ReplyLog, RoundLog

CHECKPOINT = "checkpoint.npz"
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
    arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
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
    """The checkpoint of the run in `out`; ConfigError if there is none."""
    path = out / CHECKPOINT
    if not path.exists():
        raise ConfigError(f"--resume: {path} does not exist (was the run started with checkpoint-every > 0?)")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())

        def group(prefix: str) -> Params:
            return {key[len(prefix) + 1:]: data[key] for key in data.files if key.startswith(prefix + "/")}

        params, m, v, selection = group("params"), group("optimizer-m"), group("optimizer-v"), group("selection")
    ledger = Ledger()
    for entry in meta["rounds"]:
        ledger.rounds[entry["round"]] = RoundLog(**entry)
    ledger.replies = [ReplyLog(**reply) for reply in meta["replies"]]
    return Checkpoint(meta["round"], params, (m, v), selection, ledger, meta["config"])


def check_resumable(cfg: Config, checkpoint: Checkpoint) -> None:
    """A run resumes only under the config it was checkpointed with (keys of
    how it runs aside); the first key that differs is named."""
    mine = cfg.to_dict()
    for key, value in checkpoint.config.items():
        if key not in RESUMABLE_KEYS and mine.get(key) != value:
            raise ConfigError(f"--resume: the checkpoint was made with {key} = {value!r}, this config has "
                              f"{key} = {mine.get(key)!r}")  # fmt: skip
