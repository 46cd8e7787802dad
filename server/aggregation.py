"""Aggregate sparse client updates into one global update (scatter-add).

Two rules: weighted FedAvg over all replies, or per-row averaging, where each
row of a table (an item's embedding, say) is averaged only over the clients
whose update touched that row. With one user per client, an item is seen by a
handful of the round's clients; averaging its row over all of them would
shrink its update toward zero (the popularity trap of federated MF).
"""

from __future__ import annotations

import math

import numpy as np

from prunus.common.params import Params
from prunus.common.pruning import SparseUpdate


def aggregate(updates: list[tuple[SparseUpdate, float]], shapes: dict[str, tuple[int, ...]], row_averaging: bool) -> Params:
    """Combine `(sparse update, weight)` pairs, in the given (fixed) order.

    A tensor's first axis is its rows. With `row_averaging`, a row's average
    runs over the clients that sent an entry in that row, each with its
    weight; rows nobody sent stay zero. Otherwise every entry is divided by
    the total weight (FedAvg).
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    return {name: _aggregate_tensor(name, shape, updates, row_averaging) for name, shape in shapes.items()}


def _aggregate_tensor(
    name: str, shape: tuple[int, ...], updates: list[tuple[SparseUpdate, float]], row_averaging: bool
) -> np.ndarray:
    rows = shape[0] if shape else 1
    row_size = math.prod(shape[1:]) if len(shape) > 1 else 1
    total = np.zeros(rows * row_size, dtype=np.float64)
    weight = np.zeros(rows, dtype=np.float64)
    for update, w in updates:
        indices, values, _ = update[name]
        total[indices] += w * values.astype(np.float64)  # indices are unique within a tensor
        if row_averaging:
            weight[np.unique(indices // row_size)] += w
        else:
            weight += w
    scale = np.divide(1.0, weight, out=np.zeros_like(weight), where=weight > 0)
    return (total.reshape(rows, row_size) * scale[:, None]).reshape(shape).astype(np.float32)
