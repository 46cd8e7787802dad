"""From a run config to the data a run uses: the split and the partitions.

Server and clients both call these, so they agree on the split (test or
validation) and on which users each partition holds. Results are cached per
process: a Ray actor loads the data set once, not once per message.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from prunus.common.config import Config
from prunus.common.data import (
    DatasetError,
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


def load_split(cfg: Config) -> SplitData:
    """The split to train and evaluate on (validation when tuning)."""
    return _split(
        cfg.data.dataset, cfg.data.data_dir, cfg.data.min_rating, cfg.data.eval_negatives, cfg.runtime.seed,
        cfg.data.synthetic_users, cfg.data.synthetic_items, cfg.data.synthetic_interactions, cfg.data.eval_split,
    )  # fmt: skip


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
def _split(
    dataset: str, data_dir: str, min_rating: float, n_negatives: int, seed: int,
    synthetic_users: int, synthetic_items: int, synthetic_interactions: float, eval_split: str,
) -> SplitData:  # fmt: skip
    if dataset == "ncf-ml-1m":
        split = load_ncf(data_dir)
    else:
        if dataset == "synthetic":
            data = generate_synthetic(
                n_users=synthetic_users, n_items=synthetic_items, mean_interactions=synthetic_interactions, seed=seed
            )
        elif dataset == "ml-100k":
            data = load_ml100k(data_dir)
        elif dataset == "ml-1m":
            data = load_ml1m(data_dir)
        else:
            data = load_table(Path(data_dir))
        data = to_implicit(data, min_rating=min_rating or None)
        split = leave_one_out(data, n_negatives=n_negatives, seed=seed)
    return split.validation(seed=seed, n_negatives=n_negatives) if eval_split == "validation" else split
