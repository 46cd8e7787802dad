"""Aggregate client updates (dense, sparse or factored) into one global update.

Two rules: weighted FedAvg over all replies, or per-row averaging, where each
row of a table (an item's embedding, say) is averaged only over the clients
whose update touched that row. With one user per client, an item is seen by a
handful of the round's clients; averaging its row over all of them would
shrink its update toward zero (the popularity trap of federated MF).

Sparse updates are scatter-added, dense ones added; factored ones are added
exactly as factors: the weighted sum of `L_i @ R_i` is one product of the
stacked factors, formed once per tensor rather than densified per reply.
"""

from __future__ import annotations

import numpy as np

from prunus.common.params import Params
from prunus.common.update import Dense, Factored, Sparse, Update, rows_and_width, touched_rows


def aggregate(updates: list[tuple[Update, float]], shapes: dict[str, tuple[int, ...]], row_averaging: bool) -> Params:
    """Combine `(update, weight)` pairs, in the given (fixed) order.

    A tensor's first axis is its rows. With `row_averaging`, a row's average
    runs over the clients whose update touched that row, each with its
    weight; rows nobody touched stay zero. Otherwise every entry is divided
    by the total weight (FedAvg).
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    return {name: _aggregate_tensor(name, shape, updates, row_averaging) for name, shape in shapes.items()}


def _aggregate_tensor(name: str, shape: tuple[int, ...], updates: list[tuple[Update, float]],
                      row_averaging: bool) -> np.ndarray:
    rows, width = rows_and_width(shape)
    total = np.zeros(rows * width, dtype=np.float64)
    weight = np.zeros(rows, dtype=np.float64)
    lefts, rights = [], []
    for update, w in updates:
        t = update[name]
        if isinstance(t, Sparse):
            total[t.indices] += w * t.values.astype(np.float64)  # indices are unique within a tensor
        elif isinstance(t, Dense):
            total += w * t.values.astype(np.float64).ravel()
        elif isinstance(t, Factored):
            lefts.append(w * t.left.astype(np.float64))
            rights.append(t.right.astype(np.float64))
        else:
            raise TypeError(f"tensor {name!r}: not an update form: {type(t).__name__}")
        if row_averaging:
            weight[touched_rows(t)] += w
        else:
            weight += w
    if lefts:
        total += (np.concatenate(lefts, axis=1) @ np.concatenate(rights, axis=0)).ravel()
    scale = np.divide(1.0, weight, out=np.zeros_like(weight), where=weight > 0)
    return (total.reshape(rows, width) * scale[:, None]).reshape(shape).astype(np.float32)
