"""Leave-one-out evaluation splits with sampled negatives (the NCF protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from prunus.common.data.interactions import Interactions

# Oversampling factor for rejection sampling: with 1.5x the expected number of
# draws nearly every user is filled in the first round.
_OVERSAMPLE = 1.5


@dataclass(frozen=True, eq=False)
class SplitData:
    """Leave-one-out split with sampled negatives.

    Train positives are implicit: each (user, item) pair appears once, sorted by
    user then item, so a user's items are the slice ``indptr[u]:indptr[u + 1]``.
    ``train_timestamps`` (optional, aligned with the train arrays) lets
    :meth:`validation` hold out the latest interaction instead of a random one.
    """

    n_users: int
    n_items: int
    train_users: np.ndarray  # int64, sorted by user then item, unique pairs
    train_items: np.ndarray  # int64
    test_items: np.ndarray  # int64 (n_users,), -1 if the user has no test item
    test_negatives: np.ndarray  # int64 (n_users, n_neg), -1 rows for users without test
    train_timestamps: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.train_users)
        if self.train_users.shape != (n,) or self.train_items.shape != (n,):
            raise ValueError("train_users and train_items must be 1-D arrays of equal length")
        if self.train_timestamps is not None and self.train_timestamps.shape != (n,):
            raise ValueError(f"train_timestamps must have shape ({n},)")
        _check_range("train_users", self.train_users, 0, self.n_users)
        _check_range("train_items", self.train_items, 0, self.n_items)
        if np.any(np.diff(_pair_keys(self.train_users, self.train_items, self.n_items)) <= 0):
            raise ValueError("train pairs must be unique and sorted by user then item")
        if self.test_items.shape != (self.n_users,):
            raise ValueError(f"test_items must have shape ({self.n_users},)")
        if self.test_negatives.ndim != 2 or len(self.test_negatives) != self.n_users:
            raise ValueError(f"test_negatives must have shape ({self.n_users}, n_neg)")
        _check_range("test_items", self.test_items, -1, self.n_items)
        _check_range("test_negatives", self.test_negatives, -1, self.n_items)

    @cached_property
    def indptr(self) -> np.ndarray:
        """CSR offsets (n_users + 1,) of each user's slice of ``train_items``."""
        counts = np.bincount(self.train_users, minlength=self.n_users)
        return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

    def user_items(self, user: int) -> np.ndarray:
        """That user's train items (sorted)."""
        return self.train_items[self.indptr[user] : self.indptr[user + 1]]

    def rows_of(self, users: np.ndarray) -> np.ndarray:
        """Positions of `users`' interactions in the train arrays, user by user."""
        users = np.asarray(users, dtype=np.int64)
        if not len(users):
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.indptr[u], self.indptr[u + 1]) for u in users]).astype(np.int64)

    def subset(self, users: np.ndarray) -> SplitData:
        """The split restricted to `users`, renumbered 0..len(users)-1 in that order.

        Item ids are kept, so the subset works with the global item tables: it
        is what a SuperNode holding one partition needs, and nothing more.
        """
        users = np.asarray(users, dtype=np.int64)
        counts = self.indptr[users + 1] - self.indptr[users]
        rows = self.rows_of(users)
        return SplitData(
            n_users=len(users),
            n_items=self.n_items,
            train_users=np.repeat(np.arange(len(users), dtype=np.int64), counts),
            train_items=self.train_items[rows],
            test_items=self.test_items[users],
            test_negatives=self.test_negatives[users],
            train_timestamps=None if self.train_timestamps is None else self.train_timestamps[rows],
        )

    def validation(self, seed: int, n_negatives: int = 99) -> SplitData:
        """Split for hyper-parameter tuning that never sees the test item.

        Holds out one more train interaction per user with >= 2 train items
        (the latest when ``train_timestamps`` is set, else a seeded random one)
        as the evaluation item, samples ``n_negatives`` items the user never
        interacted with (train, validation and test item excluded), and drops
        the test item entirely.
        """
        rng = np.random.default_rng(seed)
        held = _pick_one_per_user(
            self.train_users, self.train_items, self.train_timestamps, self.n_users, rng
        )
        val_items = np.full(self.n_users, -1, dtype=np.int64)
        val_items[self.train_users[held]] = self.train_items[held]
        has_test = self.test_items >= 0
        test_keys = _pair_keys(np.flatnonzero(has_test), self.test_items[has_test], self.n_items)
        excluded = _sorted_unique(
            np.concatenate((_pair_keys(self.train_users, self.train_items, self.n_items), test_keys))
        )
        keep = np.ones(len(self.train_users), dtype=bool)
        keep[held] = False
        timestamps = None if self.train_timestamps is None else self.train_timestamps[keep]
        return SplitData(
            n_users=self.n_users,
            n_items=self.n_items,
            train_users=self.train_users[keep],
            train_items=self.train_items[keep],
            test_items=val_items,
            test_negatives=_negatives_table(rng, excluded, val_items, self.n_items, n_negatives),
            train_timestamps=timestamps,
        )


def to_implicit(data: Interactions, min_rating: float | None = None) -> Interactions:
    """Keep interactions rated >= ``min_rating`` (all if None), one per (user, item).

    Duplicate pairs keep the latest interaction (by timestamp, then file order).
    Ids and ``n_users``/``n_items`` are unchanged so they stay valid for any
    table indexed by the original ids. The result is sorted by user then item.
    """
    if min_rating is None:
        kept = np.arange(len(data.users))
    elif data.ratings is None:
        raise ValueError("min_rating given but the interactions have no ratings")
    else:
        kept = np.flatnonzero(data.ratings >= min_rating)
    timestamps = None if data.timestamps is None else data.timestamps[kept]
    kept = kept[_latest_unique(data.users[kept], data.items[kept], timestamps, data.n_items)]
    return Interactions(
        users=data.users[kept],
        items=data.items[kept],
        ratings=None if data.ratings is None else data.ratings[kept],
        timestamps=None if data.timestamps is None else data.timestamps[kept],
        n_users=data.n_users,
        n_items=data.n_items,
    )


def leave_one_out(data: Interactions, *, n_negatives: int = 99, seed: int = 0) -> SplitData:
    """Hold out one interaction per user and sample negatives for it.

    The held-out item is the user's latest (by timestamp, ties going to the
    larger item id) or, without timestamps, a seeded random one. Users with a
    single interaction keep it in train and get test item -1. Duplicate pairs
    are collapsed first (see :func:`to_implicit`) so the test item never also
    sits in train. Negatives are ``n_negatives`` distinct items the user never
    interacted with.
    """
    rng = np.random.default_rng(seed)
    implicit = to_implicit(data)
    users, items = implicit.users, implicit.items
    held = _pick_one_per_user(users, items, implicit.timestamps, data.n_users, rng)
    test_items = np.full(data.n_users, -1, dtype=np.int64)
    test_items[users[held]] = items[held]
    excluded = _pair_keys(users, items, data.n_items)  # all positives: train and test
    keep = np.ones(len(users), dtype=bool)
    keep[held] = False
    return SplitData(
        n_users=data.n_users,
        n_items=data.n_items,
        train_users=users[keep],
        train_items=items[keep],
        test_items=test_items,
        test_negatives=_negatives_table(rng, excluded, test_items, data.n_items, n_negatives),
        train_timestamps=None if implicit.timestamps is None else implicit.timestamps[keep],
    )


def _pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 per (user, item) pair; sorting keys sorts by user then item."""
    return users.astype(np.int64) * n_items + items


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy 2's hash-based unique is ~10x slower on 1M int64)."""
    values = np.sort(values)
    return values[np.append(True, values[1:] != values[:-1])]


def _check_range(name: str, values: np.ndarray, low: int, high: int) -> None:
    if values.dtype != np.int64:
        raise ValueError(f"{name} must be int64, got {values.dtype}")
    if values.size and (values.min() < low or values.max() >= high):
        raise ValueError(f"{name} must lie in [{low}, {high}), got [{values.min()}, {values.max()}]")


def _latest_unique(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None, n_items: int
) -> np.ndarray:
    """Indices of the latest row of each (user, item) pair, sorted by pair."""
    keys = _pair_keys(users, items, n_items)
    if timestamps is None:
        order = np.argsort(keys, kind="stable")
    else:
        order = np.lexsort((timestamps, keys))  # stable: equal times keep file order
    sorted_keys = keys[order]
    is_last = np.append(sorted_keys[1:] != sorted_keys[:-1], True)
    return order[is_last]


def _pick_one_per_user(
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    n_users: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Index of one row per user having >= 2 rows: the latest, else seeded random.

    ``users`` must be sorted. Ties in time go to the larger item id.
    """
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    eligible = np.flatnonzero(counts >= 2)
    if timestamps is None:
        return starts[eligible] + rng.integers(0, counts[eligible])
    order = np.lexsort((items, timestamps, users))  # groups keep their positions
    return order[starts[eligible] + counts[eligible] - 1]


def _negatives_table(
    rng: np.random.Generator,
    excluded: np.ndarray,
    targets: np.ndarray,
    n_items: int,
    n_negatives: int,
) -> np.ndarray:
    """(n_users, n_negatives) negatives for users whose target is >= 0, -1 rows elsewhere."""
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
    table = np.full((len(targets), n_negatives), -1, dtype=np.int64)
    users = np.flatnonzero(targets >= 0)
    table[users] = sample_negatives(rng, excluded, users, n_items, n_negatives)
    return table


def sample_negatives(
    rng: np.random.Generator,
    excluded: np.ndarray,
    users: np.ndarray,
    n_items: int,
    n_negatives: int,
) -> np.ndarray:
    """``n_negatives`` distinct items per user, uniformly among non-excluded ones.

    ``excluded`` holds sorted unique pair keys (user * n_items + item).
    Vectorised rejection sampling: every round draws, for all unfinished users
    at once, enough candidates to finish with high probability, and keeps the
    first new, non-excluded ones in draw order (which is uniform sampling
    without replacement).
    """
    lo = np.searchsorted(excluded, users * n_items)
    free = n_items - (np.searchsorted(excluded, (users + 1) * n_items) - lo)
    if np.any(free < n_negatives):
        bad = int(np.argmax(free < n_negatives))
        raise ValueError(
            f"user {users[bad]} has only {free[bad]} items it never interacted with; "
            f"cannot sample {n_negatives} negatives"
        )
    out = np.full((len(users), n_negatives), -1, dtype=np.int64)
    filled = np.zeros(len(users), dtype=np.int64)
    pending = np.flatnonzero(filled < n_negatives)
    while pending.size:
        need = n_negatives - filled[pending]
        available = free[pending] - filled[pending]
        draws = np.ceil(_OVERSAMPLE * need * n_items / available).astype(np.int64) + 4
        rows = np.repeat(pending, draws)
        candidates = rng.integers(0, n_items, size=rows.size)
        fresh = _first_new(out[pending], pending, rows, candidates, n_items)
        fresh &= ~_contains(excluded, users[rows] * n_items + candidates)
        _append_by_row(out, filled, rows[fresh], candidates[fresh])
        pending = pending[filled[pending] < n_negatives]
    return out


def _first_new(
    accepted: np.ndarray, accepted_rows: np.ndarray, rows: np.ndarray, candidates: np.ndarray, n_items: int
) -> np.ndarray:
    """Mask of candidates that are neither already accepted in their row nor repeats."""
    have = accepted >= 0
    old_keys = (np.broadcast_to(accepted_rows[:, None], accepted.shape)[have]) * n_items + accepted[have]
    keys = np.concatenate((old_keys, rows * n_items + candidates))
    _, first = np.unique(keys, return_index=True)  # index of each key's first occurrence
    is_first = np.zeros(keys.size, dtype=bool)
    is_first[first] = True
    return is_first[old_keys.size :]


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Vectorised membership test against a sorted array."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def _append_by_row(out: np.ndarray, filled: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """Append values (grouped by non-decreasing row) after each row's filled prefix."""
    group_start = np.searchsorted(rows, rows, side="left")
    slot = filled[rows] + np.arange(rows.size) - group_start
    fits = slot < out.shape[1]
    out[rows[fits], slot[fits]] = values[fits]
    filled += np.bincount(rows[fits], minlength=filled.size)
