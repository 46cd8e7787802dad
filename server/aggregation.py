"""Aggregate client updates into one global update.

Two rules: weighted FedAvg over all replies, or per-row averaging, where each
row of a table (an item's embedding, say) is averaged only over the clients
whose update touched that row. With one user per client, an item is seen by a
handful of the round's clients; averaging its row over all of them would
shrink its update toward zero (the popularity trap of federated MF).
"""

from __future__ import annotations

import numpy as np

from common.params import Params


def aggregate(updates: list[tuple[Params, float]], row_averaging: bool) -> Params:
    """Combine `(delta, weight)` pairs (in a fixed order) into one update.

    Each name's first axis is its rows. With `row_averaging`, a row's average
    runs over the clients with a non-zero entry in that row, each weighted by
    its weight; rows nobody touched stay zero.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    names = list(updates[0][0])
    out: Params = {}
    for name in names:
        total = np.zeros_like(updates[0][0][name], dtype=np.float64)
        if row_averaging:
            row_weight = np.zeros(total.shape[0], dtype=np.float64)
            for delta, weight in updates:
                value = delta[name]
                total += weight * value
                touched = value.reshape(len(value), -1).any(axis=1) if value.ndim else np.array([value != 0])
                row_weight += weight * touched
            scale = np.divide(1.0, row_weight, out=np.zeros_like(row_weight), where=row_weight > 0)
            out[name] = (total * scale.reshape((-1,) + (1,) * (total.ndim - 1))).astype(np.float32)
        else:
            weights = 0.0
            for delta, weight in updates:
                total += weight * delta[name]
                weights += weight
            out[name] = (total / weights).astype(np.float32)
    return out
