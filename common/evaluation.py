"""Rank held-out items with a model: the standard leave-one-out protocol.

Sampled: the held-out item among its user's sampled negatives (99 in the NCF
protocol). Full: among every item the user has not trained on.
"""

from __future__ import annotations

import numpy as np
import torch

from prunus.common.data import SplitData
from prunus.common.metrics import hit_rate, ndcg, rank_of_positive
from prunus.common.models import Recommender

CHUNK_USERS = 512


@torch.no_grad()
def ranking_metrics(
    model: Recommender,
    split: SplitData,
    k: int = 10,
    full_ranking: bool = False,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """HR@k and NDCG@k over users with a held-out item.

    `users` lists the global ids held by the model's user table, in order (a
    client's model); None means the table holds every user (the server's).
    """
    model.eval()
    device = next(model.parameters()).device
    users = np.arange(split.n_users) if users is None else np.asarray(users)
    rows = np.flatnonzero(split.test_items[users] >= 0)
    evaluated = users[rows]
    u = torch.as_tensor(rows, device=device)
    pos = model(u, torch.as_tensor(split.test_items[evaluated], device=device)).cpu().numpy()
    negatives = torch.as_tensor(split.test_negatives[evaluated], device=device)
    neg = model(u[:, None].expand_as(negatives), negatives).cpu().numpy()
    # Some published negative files list the held-out item among its own
    # negatives (156 users of the NCF ML-1M split); as in NCF's evaluation,
    # that copy is the positive itself, not a competitor.
    neg[split.test_negatives[evaluated] == split.test_items[evaluated, None]] = -np.inf
    ranks = rank_of_positive(pos, neg)
    metrics = {f"hr@{k}": hit_rate(ranks, k), f"ndcg@{k}": ndcg(ranks, k), "eval-users": float(len(rows))}
    if full_ranking:
        full = _full_ranks(model, split, rows, evaluated, pos)
        metrics |= {f"full-hr@{k}": hit_rate(full, k), f"full-ndcg@{k}": ndcg(full, k)}
    model.train()
    return metrics


def _full_ranks(
    model: Recommender, split: SplitData, rows: np.ndarray, users: np.ndarray, pos: np.ndarray
) -> np.ndarray:
    """Rank among all items, with the user's training items excluded."""
    device = next(model.parameters()).device
    all_items = torch.arange(split.n_items, device=device)
    ranks = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), CHUNK_USERS):
        chunk = slice(start, start + CHUNK_USERS)
        u = torch.as_tensor(rows[chunk], device=device)
        scores = model(u[:, None].expand(-1, split.n_items), all_items[None, :].expand(len(u), -1)).cpu().numpy()
        for row, user in enumerate(users[chunk]):
            scores[row, split.user_items(user)] = -np.inf
        ranks[chunk] = (scores >= pos[chunk, None]).sum(1) - 1
    return ranks
