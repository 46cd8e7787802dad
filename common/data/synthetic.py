"""Synthetic interactions with a planted low-rank signal, for fast, offline tests.

Each user picks items with probability softmax(u.v / T + log popularity):
the latent term is what a recommender must learn, the Zipf popularity term is
what a popularity baseline already knows, so a working model beats popularity.
"""

from __future__ import annotations

import numpy as np

from prunus.common.data.interactions import Interactions

_TEMPERATURE = 0.5  # latent scores have unit variance; 0.5 makes them outweigh popularity
_BLOCK = 1 << 20  # score-matrix elements per Gumbel-top-k block, bounds memory
_START = 1_000_000_000  # first timestamp (2001-09-09), MovieLens-like epoch seconds
_MAX_GAP = 7 * 24 * 3600  # at most a week between a user's consecutive interactions


def planted_factors(
    *, n_users: int, n_items: int, dim: int = 8, popularity_exponent: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User factors (n_users, dim), item factors (n_items, dim) and item log-popularity.

    These are exactly what :func:`generate_synthetic` plants for the same
    arguments, so tests and benchmarks can score items with the true model.
    Factors are scaled so that u.v has unit variance.
    """
    rng = np.random.default_rng([seed, 0])
    scale = dim**-0.25
    users = rng.normal(0.0, scale, (n_users, dim))
    items = rng.normal(0.0, scale, (n_items, dim))
    ranks = rng.permutation(n_items) + 1
    return users, items, -popularity_exponent * np.log(ranks)


def generate_synthetic(
    *,
    n_users: int = 500,
    n_items: int = 400,
    dim: int = 8,
    mean_interactions: float = 30.0,
    popularity_exponent: float = 1.0,
    seed: int = 0,
) -> Interactions:
    """Interactions drawn from planted latent factors and Zipf item popularity.

    Each user draws Poisson(mean_interactions) distinct items (at least 3, at
    most half the catalogue so negatives remain) by Gumbel-top-k sampling.
    The items get increasing timestamps in random order (so the latest one is
    an unbiased draw, fit for leave-one-out), and 1-5 ratings that grow with
    u.v. Deterministic in ``seed``.
    """
    _check_arguments(n_users, n_items, dim, mean_interactions, popularity_exponent)
    user_f, item_f, log_pop = planted_factors(
        n_users=n_users, n_items=n_items, dim=dim, popularity_exponent=popularity_exponent, seed=seed
    )
    rng = np.random.default_rng([seed, 1])
    counts = np.clip(rng.poisson(mean_interactions, n_users), 3, n_items // 2)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    items = _gumbel_top_k(user_f, item_f, log_pop, counts, rng)
    order = np.lexsort((rng.random(users.size), users))  # random time order within each user
    items = items[order]
    affinity = np.einsum("nd,nd->n", user_f[users], item_f[items])
    noise = rng.normal(0.0, 0.5, users.size)
    ratings = np.clip(np.round(2.5 + affinity + noise), 1, 5).astype(np.float32)
    return Interactions(users, items, ratings, _timestamps(users, counts, rng), n_users, n_items)


def _check_arguments(
    n_users: int, n_items: int, dim: int, mean_interactions: float, popularity_exponent: float
) -> None:
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    if n_items < 6:
        raise ValueError(f"n_items must be >= 6 (each user draws 3 to n_items // 2 items), got {n_items}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if mean_interactions <= 0:
        raise ValueError(f"mean_interactions must be > 0, got {mean_interactions}")
    if popularity_exponent < 0:
        raise ValueError(f"popularity_exponent must be >= 0, got {popularity_exponent}")


def _gumbel_top_k(
    user_f: np.ndarray,
    item_f: np.ndarray,
    log_pop: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Each user's ``counts[u]`` distinct items, sampled without replacement from the softmax.

    Adding Gumbel noise to the logits and keeping the top k is exactly
    sequential sampling without replacement; done in blocks of users.
    """
    n_users, n_items = len(user_f), len(item_f)
    step = max(1, _BLOCK // n_items)
    chosen = []
    for start in range(0, n_users, step):
        logits = user_f[start : start + step] @ item_f.T / _TEMPERATURE + log_pop
        keys = logits + rng.gumbel(size=logits.shape)
        k = counts[start : start + step]
        top = np.argpartition(-keys, k.max() - 1, axis=1)[:, : k.max()]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
        chosen.append(top[np.arange(k.max()) < k[:, None]])
    return np.concatenate(chosen).astype(np.int64)


def _timestamps(users: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Strictly increasing times within each user, users starting within a year."""
    gaps = rng.integers(1, _MAX_GAP, users.size)
    running = np.cumsum(gaps)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    before_user = np.repeat(running[starts] - gaps[starts], counts)
    first = _START + rng.integers(0, 365 * 24 * 3600, len(counts))
    return (first[users] + running - before_user).astype(np.int64)
