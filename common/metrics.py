"""Ranking metrics: HR@K and NDCG@K, sampled (held-out item vs negatives) or full."""

from __future__ import annotations

import numpy as np


def rank_of_positive(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """0-based rank of each row's positive among its negatives.

    Ties count against the positive (a negative scoring equal ranks above it):
    a constant model must not look perfect.
    """
    return (neg_scores >= pos_scores[:, None]).sum(axis=1)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Share of users whose held-out item ranks in the top k."""
    return float((ranks < k).mean()) if len(ranks) else float("nan")


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1/log2(rank+2) when it is in the top k."""
    if not len(ranks):
        return float("nan")
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(gains.mean())
