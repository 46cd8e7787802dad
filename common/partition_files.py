"""One file per partition, so each SuperNode of a real federation holds and
loads only its own users' interactions.

`prunus partition CONFIG --out DIR` writes `partition-K.npz` (plain numpy
arrays, no pickle) and `manifest.json`; a SuperNode started with
`--node-config "partition-id=K data-file=DIR/partition-K.npz"` trains on that
file alone. Each file records the config keys that decide its content, and a
run whose config disagrees is refused, naming the key, before any training.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from prunus.common.config import Config
from prunus.common.data import DatasetError, SplitData
from prunus.common.datasets import load_split, partitions

FORMAT_VERSION = 1
# the keys that decide which users, items and negatives a partition holds
IDENTITY_KEYS = (
    "dataset", "partition", "num-silos", "dirichlet-alpha", "seed", "eval-split", "eval-negatives",
    "min-rating", "synthetic-users", "synthetic-items", "synthetic-interactions",
)  # fmt: skip
_ARRAYS = ("users", "train_users", "train_items", "test_items", "test_negatives")


def identity(cfg: Config) -> dict:
    values = cfg.to_dict()
    return {key: values[key] for key in IDENTITY_KEYS}


def write_partition_files(cfg: Config, out: Path) -> dict:
    """Every partition of `cfg` in its own file; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    split, parts = load_split(cfg), partitions(cfg)
    files = []
    for partition_id, users in enumerate(parts):
        local = split.subset(users)
        path = out / f"partition-{partition_id}.npz"
        np.savez_compressed(
            path,
            format_version=FORMAT_VERSION,
            partition_id=partition_id,
            num_partitions=len(parts),
            n_items=split.n_items,
            identity=json.dumps(identity(cfg), sort_keys=True),
            users=np.asarray(users, dtype=np.int64),
            train_users=local.train_users,
            train_items=local.train_items,
            test_items=local.test_items,
            test_negatives=local.test_negatives,
        )
        files.append({"partition-id": partition_id, "file": path.name, "users": len(users),
                      "interactions": len(local.train_items)})  # fmt: skip
    manifest = {"format_version": FORMAT_VERSION, "identity": identity(cfg), "num_partitions": len(parts), "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@lru_cache(maxsize=2)
def load_partition_file(path: str, cfg: Config, partition_id: int) -> SplitData:
    """This node's users (renumbered 0..n-1) with global item ids.

    Raises DatasetError naming the file when it is unreadable, malformed, of
    another partition, or made under a config that disagrees with the run's.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable partition file ({err})") from None
    missing = {"format_version", "partition_id", "n_items", "identity", *_ARRAYS} - set(fields)
    if missing:
        raise DatasetError(f"{path}: not a partition file, missing {sorted(missing)}")
    if int(fields["format_version"]) != FORMAT_VERSION:
        raise DatasetError(f"{path}: format version {int(fields['format_version'])}, expected {FORMAT_VERSION}")
    if int(fields["partition_id"]) != partition_id:
        raise DatasetError(f"{path}: holds partition {int(fields['partition_id'])}, but this node is partition {partition_id}")
    made_with, running = json.loads(str(fields["identity"])), identity(cfg)
    for key in IDENTITY_KEYS:
        if made_with.get(key) != running[key]:
            raise DatasetError(
                f"{path}: made with {key}={made_with.get(key)!r} but the run has {key}={running[key]!r}; "
                "re-run `prunus partition` with the run's config"
            )
    try:
        return SplitData(
            n_users=len(fields["users"]),
            n_items=int(fields["n_items"]),
            train_users=fields["train_users"],
            train_items=fields["train_items"],
            test_items=fields["test_items"],
            test_negatives=fields["test_negatives"],
        )
    except ValueError as err:
        raise DatasetError(f"{path}: {err}") from None
