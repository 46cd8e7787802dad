"""Synthetic data: deterministic, popularity-skewed, and carrying a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.data import generate_synthetic, leave_one_out, planted_factors


def test_deterministic_in_seed() -> None:
    first, again, other = (generate_synthetic(n_users=80, n_items=60, seed=s) for s in (1, 1, 2))
    for name in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.items, other.items)


def test_shapes_and_per_user_invariants() -> None:
    data = generate_synthetic(n_users=200, n_items=100, mean_interactions=20, seed=0)
    assert (data.n_users, data.n_items) == (200, 100)
    assert data.users.dtype == data.items.dtype == data.timestamps.dtype == np.int64
    assert data.ratings.dtype == np.float32 and set(np.unique(data.ratings)) <= {1, 2, 3, 4, 5}
    counts = np.bincount(data.users, minlength=200)
    assert counts.min() >= 3 and counts.max() <= 50 and 15 < counts.mean() < 25
    assert (np.diff(data.users) >= 0).all()
    same_user = np.diff(data.users) == 0
    assert (np.diff(data.timestamps)[same_user] > 0).all()  # increasing in time within a user
    keys = data.users * 100 + data.items
    assert len(np.unique(keys)) == len(keys)  # distinct items per user


def test_popularity_is_skewed() -> None:
    data = generate_synthetic(seed=0)
    counts = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    top_share = counts[: data.n_items // 10].sum() / counts.sum()
    assert top_share > 0.25
    flat = generate_synthetic(popularity_exponent=0.0, seed=0)
    flat_counts = np.sort(np.bincount(flat.items, minlength=flat.n_items))[::-1]
    assert flat_counts[: flat.n_items // 10].sum() / flat_counts.sum() < top_share


def hit_rate_at_10(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    return float(((scores_neg > scores_pos[:, None]).sum(axis=1) < 10).mean())


def test_planted_signal_beats_popularity() -> None:
    data = generate_synthetic(seed=0)
    split = leave_one_out(data, n_negatives=99, seed=0)
    user_f, item_f, log_pop = planted_factors(n_users=data.n_users, n_items=data.n_items, seed=0)
    affinity_pos = np.einsum("ud,ud->u", user_f, item_f[split.test_items])
    affinity_neg = np.einsum("ud,und->un", user_f, item_f[split.test_negatives])
    auc = (affinity_neg < affinity_pos[:, None]).mean()
    assert auc > 0.75  # chance is 0.5
    popularity = np.bincount(split.train_items, minlength=data.n_items).astype(float)
    pop_hr = hit_rate_at_10(popularity[split.test_items], popularity[split.test_negatives])
    true_pos = affinity_pos / 0.5 + log_pop[split.test_items]
    true_neg = affinity_neg / 0.5 + log_pop[split.test_negatives]
    assert hit_rate_at_10(true_pos, true_neg) > pop_hr + 0.2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_users": 0}, "n_users"),
        ({"n_items": 5}, "n_items"),
        ({"dim": 0}, "dim"),
        ({"mean_interactions": 0}, "mean_interactions"),
        ({"popularity_exponent": -1}, "popularity_exponent"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_synthetic(**kwargs)
