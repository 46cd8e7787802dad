"""The round's neighbour graph: each client masks with a few neighbours, not all.

A Harary graph over a seeded random order of the round's clients: each is
joined to the `degree // 2` clients before and after it on that cycle
(SecAgg+, Bell et al. 2020). The order depends only on (seed, round), so
the server and every client derive the same graph.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def neighbours(clients: list[int], degree: int, seed: int, server_round: int) -> dict[int, list[int]]:
    """Each client's sorted neighbours (every other client when the round is small)."""
    return {c: list(peers) for c, peers in _graph(tuple(clients), degree, seed, server_round).items()}


@lru_cache(maxsize=64)  # every message of a round asks for the same graph
def _graph(clients: tuple[int, ...], degree: int, seed: int, server_round: int) -> dict[int, tuple[int, ...]]:
    n = len(clients)
    if n - 1 <= degree:
        return {c: tuple(sorted(set(clients) - {c})) for c in clients}
    order = [clients[i] for i in np.random.default_rng([seed, server_round, 31]).permutation(n)]
    half = max(1, degree // 2)
    return {c: tuple(sorted({order[(i + k) % n] for k in range(-half, half + 1) if k})) for i, c in enumerate(order)}
