"""From a run config to the data a run uses: the split and the partitions.

Server and clients both call these, so they agree on the split (test or
validation) and on which users each partition holds. Results are cached per
process: a Ray actor loads the data set once, not once per message.

Data sets are plug-ins: `DATASETS` maps each `dataset` name to its loader
(interactions, which the leave-one-out split then cuts, or a split that comes
ready-made); config validation reads the names from it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from prunus.common.config import Config, DataConfig
from prunus.common.data import (
    DatasetError,
    Interactions,
    SplitData,
    generate_synthetic,
    leave_one_out,
    load_ml1m,
    load_ml100k,
    load_ncf,
    load_ncf_item_map,
    load_raw_ids,
    load_table,
    load_titles,
    partition_users,
    to_implicit,
    user_groups_by_popularity,
)
from prunus.common.registry import Registry

Loader = Callable[[DataConfig, int], "Interactions | SplitData"]
DATASETS: Registry[Loader] = Registry("dataset")


@DATASETS.register("synthetic")
def _synthetic(d: DataConfig, seed: int) -> Interactions:
    return generate_synthetic(n_users=d.synthetic_users, n_items=d.synthetic_items,
                              mean_interactions=d.synthetic_interactions, seed=seed)


@DATASETS.register("ml-100k")
def _ml100k(d: DataConfig, seed: int) -> Interactions:
    return load_ml100k(d.data_dir)


@DATASETS.register("ml-1m")
def _ml1m(d: DataConfig, seed: int) -> Interactions:
    return load_ml1m(d.data_dir)


@DATASETS.register("ncf-ml-1m")
def _ncf(d: DataConfig, seed: int) -> SplitData:
    return load_ncf(d.data_dir)  # NCF's own split, negatives included


@DATASETS.register("csv")
def _csv(d: DataConfig, seed: int) -> Interactions:
    return load_table(Path(d.data_dir))


def load_split(cfg: Config) -> SplitData:
    """The split to train and evaluate on (validation when tuning)."""
    return _split(cfg.data, cfg.runtime.seed)


@lru_cache(maxsize=4)
def partitions(cfg: Config) -> list[np.ndarray]:
    """User ids of every partition, indexed by Flower's `partition-id`."""
    split = load_split(cfg)
    if cfg.data.partition == "user":
        return partition_users(split.n_users, scheme="user")
    groups = user_groups_by_popularity(split) if cfg.data.partition == "dirichlet" else None
    return partition_users(
        split.n_users, scheme=cfg.data.partition, num_partitions=cfg.data.num_silos,
        alpha=cfg.data.dirichlet_alpha, seed=cfg.runtime.seed, user_groups=groups,
    )  # fmt: skip


def num_partitions(cfg: Config) -> int:
    return load_split(cfg).n_users if cfg.data.partition == "user" else cfg.data.num_silos


def raw_ids(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The data set's own id of every user and every item index of `load_split(cfg)`.

    MovieLens ids for ml-100k and ml-1m, the table's values for csv; for
    ncf-ml-1m, items by MovieLens MovieID when `item_map.tsv` is beside the
    split (else NCF ids, as its users always are); synthetic: the indices.
    """
    split = load_split(cfg)
    users, items = np.arange(split.n_users), np.arange(split.n_items)
    dataset, data_dir = cfg.data.dataset, cfg.data.data_dir
    if dataset in ("ml-100k", "ml-1m", "csv"):
        users, items = load_raw_ids(dataset, data_dir)
    elif dataset == "ncf-ml-1m" and (movie_ids := load_ncf_item_map(data_dir)) is not None:
        items = movie_ids
    if (len(users), len(items)) != (split.n_users, split.n_items):
        raise DatasetError(
            f"{data_dir}: {len(users)} user and {len(items)} item ids, but the split has "
            f"{split.n_users} users and {split.n_items} items"
        )
    return users, items


def item_titles(cfg: Config, path: str | Path | None = None) -> dict[str, str]:
    """Titles by raw item id (as `raw_ids` gives them), from `path` or else from
    `u.item` (ml-100k) or `movies.dat` (ml-1m; ncf-ml-1m with `item_map.tsv`:
    beside the split or in a sibling `ml-1m` folder); {} when there are none."""
    if path is None:
        root = Path(cfg.data.data_dir)
        root = root.parent if root.is_file() else root
        candidates = {
            "ml-100k": [root / "u.item"],
            "ml-1m": [root / "movies.dat"],
            "ncf-ml-1m": [root / "movies.dat", root.parent / "ml-1m" / "movies.dat"]
            if (root / "item_map.tsv").is_file() else [],
        }.get(cfg.data.dataset, [])  # fmt: skip
        path = next((c for c in candidates if c.is_file()), None)
    return load_titles(path) if path is not None else {}


@lru_cache(maxsize=4)
def _split(d: DataConfig, seed: int) -> SplitData:
    split = DATASETS.get(d.dataset)(d, seed)
    if not isinstance(split, SplitData):
        split = leave_one_out(to_implicit(split, min_rating=d.min_rating or None), n_negatives=d.eval_negatives,
                              seed=seed)
    return split.validation(seed=seed, n_negatives=d.eval_negatives) if d.eval_split == "validation" else split
