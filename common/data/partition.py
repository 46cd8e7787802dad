"""Assigning users to federated clients (silos)."""

from __future__ import annotations

import numpy as np

from prunus.common.data.split import SplitData

SCHEMES = ("user", "iid", "dirichlet")
_DEFAULT_GROUPS = 10


def partition_users(
    n_users: int,
    *,
    scheme: str,
    num_partitions: int | None = None,
    alpha: float = 0.5,
    seed: int = 0,
    user_groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Users of each client as sorted int64 arrays; every user in exactly one.

    - ``"user"``: one client per user (cross-device FL); ``num_partitions``, if
      given, must equal ``n_users``.
    - ``"iid"``: a seeded shuffle cut into ``num_partitions`` near-equal silos.
    - ``"dirichlet"``: non-IID silos. For each group of users (``user_groups``,
      one int label per user; a seeded random grouping into 10 if None) silo
      shares are drawn from Dirichlet(alpha) and the group's users dealt out
      accordingly. Small alpha concentrates each group in few silos. Empty
      silos get a user from the largest one.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if scheme == "user":
        if num_partitions is not None and num_partitions != n_users:
            raise ValueError(f"num_partitions must be None or n_users ({n_users}) for scheme 'user'")
        return [np.array([u], dtype=np.int64) for u in range(n_users)]
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if num_partitions is None or not 1 <= num_partitions <= n_users:
        raise ValueError(
            f"num_partitions must be in [1, n_users={n_users}] for scheme {scheme!r}, got {num_partitions}"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n_users), num_partitions)]
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    groups = _groups(n_users, user_groups, rng)
    silo = _dirichlet_silos(groups, num_partitions, alpha, rng)
    _fill_empty(silo, num_partitions, rng)
    order = np.argsort(silo, kind="stable")  # users ascending within each silo
    return np.split(order.astype(np.int64), np.cumsum(np.bincount(silo, minlength=num_partitions))[:-1])


def user_groups_by_popularity(split: SplitData, n_groups: int = 10) -> np.ndarray:
    """Label each user 0..n_groups-1 by how popular its median train item is.

    Users are ranked by the train popularity of their median item (by
    popularity) and cut into ``n_groups`` equal-size quantile groups: 0 is the
    most mainstream taste, n_groups-1 the most niche. Equal-size user groups
    (rather than item-popularity deciles, which would put almost every user in
    the top deciles) give Dirichlet partitioning a real non-IID axis. Users
    without train items count as most niche.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    popularity = np.bincount(split.train_items, minlength=split.n_items)
    item_pop = popularity[split.train_items]
    order = np.lexsort((item_pop, split.train_users))  # by user, then item popularity
    counts = np.diff(split.indptr)
    median = np.zeros(split.n_users, dtype=np.int64)
    has_items = counts > 0
    median[has_items] = item_pop[order[split.indptr[:-1][has_items] + (counts[has_items] - 1) // 2]]
    rank = np.empty(split.n_users, dtype=np.int64)
    rank[np.lexsort((np.arange(split.n_users), -median))] = np.arange(split.n_users)
    return rank * n_groups // split.n_users


def _groups(n_users: int, user_groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Dense 0..G-1 group labels, given or drawn at random."""
    if user_groups is None:
        return rng.integers(0, _DEFAULT_GROUPS, n_users)
    user_groups = np.asarray(user_groups)
    if user_groups.shape != (n_users,) or not np.issubdtype(user_groups.dtype, np.integer):
        raise ValueError(f"user_groups must be an integer array of shape ({n_users},)")
    return np.unique(user_groups, return_inverse=True)[1]


def _dirichlet_silos(
    groups: np.ndarray, num_partitions: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Silo of each user: each group's shuffled users cut at Dirichlet(alpha) proportions."""
    silo = np.empty(len(groups), dtype=np.int64)
    by_group = np.split(np.argsort(groups, kind="stable"), np.cumsum(np.bincount(groups))[:-1])
    for members in by_group:
        members = rng.permutation(members)
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        sizes = np.diff(np.concatenate(([0], cuts, [len(members)])))
        silo[members] = np.repeat(np.arange(num_partitions), sizes)
    return silo


def _fill_empty(silo: np.ndarray, num_partitions: int, rng: np.random.Generator) -> None:
    """Give every empty silo one random user of the currently largest silo."""
    sizes = np.bincount(silo, minlength=num_partitions)
    for empty in np.flatnonzero(sizes == 0):
        largest = int(np.argmax(sizes))
        donor = rng.choice(np.flatnonzero(silo == largest))
        silo[donor] = empty
        sizes[largest] -= 1
        sizes[empty] += 1
