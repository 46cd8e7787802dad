"""A model update, per tensor in one of three forms: dense, sparse or factored.

Compression methods produce them (client side) and decode them (server side);
aggregation accepts all three, so a new kind of update (a low-rank one, say)
needs no change to the server. Every form knows its tensor's shape, the
entries it sends and the rows it touches (for per-row averaging).

* `Dense(values)`: the whole float32 tensor.
* `Sparse(indices, values, shape)`: flat row-major int64 indices, strictly
  increasing, and their float32 values; everything else is zero. This is also
  the codec's form of one tensor (`common.codec.decode` returns it).
* `Factored(left, right, shape)`: `left @ right` reshaped to `shape`, with
  `left` of shape `(shape[0], r)` and `right` of shape `(r, prod(shape[1:]))`;
  sent as its factors and added as such (see `server.aggregation`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Union

import numpy as np


class Dense(NamedTuple):
    values: np.ndarray


class Sparse(NamedTuple):
    indices: np.ndarray
    values: np.ndarray
    shape: tuple[int, ...]


class Factored(NamedTuple):
    left: np.ndarray
    right: np.ndarray
    shape: tuple[int, ...]


TensorUpdate = Union[Dense, Sparse, Factored]
Update = dict[str, TensorUpdate]
SparseUpdate = dict[str, Sparse]


def shape_of(t: TensorUpdate) -> tuple[int, ...]:
    return tuple(t.values.shape) if isinstance(t, Dense) else tuple(t.shape)


def rows_and_width(shape: tuple[int, ...]) -> tuple[int, int]:
    """A tensor seen as a table: its first axis is rows (0-D: one row of one)."""
    rows = shape[0] if shape else 1
    return rows, math.prod(shape[1:]) if len(shape) > 1 else 1


def nonzeros(array: np.ndarray) -> Sparse:
    """The non-zero entries of a dense array."""
    flat = np.asarray(array).ravel()
    indices = np.flatnonzero(flat)
    return Sparse(indices, flat[indices], tuple(int(d) for d in array.shape))


def to_dense(t: TensorUpdate) -> np.ndarray:
    """The update as one float32 array of its tensor's shape."""
    if isinstance(t, Dense):
        return np.asarray(t.values, dtype=np.float32)
    shape = tuple(int(d) for d in t.shape)
    if isinstance(t, Factored):
        return (t.left.astype(np.float64) @ t.right.astype(np.float64)).astype(np.float32).reshape(shape)
    dense = np.zeros(math.prod(shape), dtype=np.float32)
    dense[np.asarray(t.indices, dtype=np.int64)] = np.asarray(t.values, dtype=np.float32)
    return dense.reshape(shape)


def densify(update: dict[str, TensorUpdate]) -> dict[str, np.ndarray]:
    """Dense float32 arrays of a whole update."""
    return {name: to_dense(t) for name, t in update.items()}


def sent_entries(t: TensorUpdate) -> int:
    """Numbers that travelled for this tensor: its non-zeros; for a factored
    update the left factor's (the right one is derived from a shared seed)."""
    if isinstance(t, Dense):
        return int(np.count_nonzero(t.values))
    if isinstance(t, Factored):
        return int(np.count_nonzero(t.left))
    return len(t.indices)


def touched_rows(t: TensorUpdate) -> np.ndarray:
    """Row ids this update changes (sorted, unique)."""
    rows, width = rows_and_width(shape_of(t))
    if isinstance(t, Sparse):
        ids = np.asarray(t.indices) // width
        step = np.diff(ids)
        if not (step >= 0).all():  # not sorted: sort them
            return np.unique(ids)
        return ids[np.concatenate(([True], step > 0))] if ids.size else ids
    if isinstance(t, Dense):
        return np.flatnonzero(np.asarray(t.values).reshape(rows, width).any(axis=1))
    return np.flatnonzero(np.asarray(t.left).any(axis=1))
