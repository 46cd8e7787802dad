"""The in-memory form every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Interactions:
    """Loaded interactions with contiguous 0-based user/item ids.

    ``eq=False``: element-wise array comparison makes ``==`` meaningless here,
    so instances compare (and hash) by identity.
    """

    users: np.ndarray  # int64, shape (N,)
    items: np.ndarray  # int64, shape (N,)
    ratings: np.ndarray | None  # float32 or None
    timestamps: np.ndarray | None  # int64 or None
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        n = len(self.users)
        if self.users.shape != (n,) or self.items.shape != (n,):
            raise ValueError("users and items must be 1-D arrays of equal length")
        for name in ("ratings", "timestamps"):
            column = getattr(self, name)
            if column is not None and column.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {column.shape}")
        _check_ids("users", self.users, self.n_users)
        _check_ids("items", self.items, self.n_items)

    def __len__(self) -> int:
        return len(self.users)


def _check_ids(name: str, ids: np.ndarray, bound: int) -> None:
    """Fail early on ids that would index outside embedding tables."""
    if ids.dtype != np.int64:
        raise ValueError(f"{name} must be int64, got {ids.dtype}")
    if len(ids) and (ids.min() < 0 or ids.max() >= bound):
        raise ValueError(f"{name} must lie in [0, {bound}), got [{ids.min()}, {ids.max()}]")
