"""User partitioning: complete, disjoint, and non-IID when asked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.data import SplitData, generate_synthetic, leave_one_out, partition_users, user_groups_by_popularity


def assert_exact_cover(parts: list[np.ndarray], n_users: int) -> None:
    assert all(part.dtype == np.int64 and len(part) > 0 for part in parts)
    assert all((np.diff(part) > 0).all() for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n_users))


@settings(max_examples=60, deadline=None)
@given(
    n_users=st.integers(1, 120),
    fraction=st.floats(0.0, 1.0),
    scheme=st.sampled_from(["iid", "dirichlet"]),
    alpha=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
    n_groups=st.integers(1, 12),
)
def test_every_user_in_exactly_one_non_empty_silo(
    n_users: int, fraction: float, scheme: str, alpha: float, seed: int, n_groups: int
) -> None:
    num_partitions = 1 + round(fraction * (n_users - 1))
    groups = np.random.default_rng(seed).integers(0, n_groups, n_users)
    parts = partition_users(
        n_users, scheme=scheme, num_partitions=num_partitions, alpha=alpha, seed=seed, user_groups=groups
    )
    assert len(parts) == num_partitions
    assert_exact_cover(parts, n_users)


def test_user_scheme_is_one_silo_per_user() -> None:
    parts = partition_users(5, scheme="user")
    assert [part.tolist() for part in parts] == [[0], [1], [2], [3], [4]]
    assert len(partition_users(5, scheme="user", num_partitions=5)) == 5


def test_iid_is_balanced_and_seeded() -> None:
    parts = partition_users(103, scheme="iid", num_partitions=10, seed=1)
    assert_exact_cover(parts, 103)
    assert {len(part) for part in parts} == {10, 11}
    again = partition_users(103, scheme="iid", num_partitions=10, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert parts[0].tolist() != list(range(10))  # shuffled


def group_skew(parts: list[np.ndarray], groups: np.ndarray) -> float:
    """Mean total-variation distance between each silo's group mix and the global mix."""
    overall = np.bincount(groups) / len(groups)
    mixes = [np.bincount(groups[part], minlength=len(overall)) / len(part) for part in parts]
    return float(np.mean([0.5 * np.abs(mix - overall).sum() for mix in mixes]))


def test_dirichlet_with_small_alpha_is_non_iid() -> None:
    split = leave_one_out(generate_synthetic(n_users=1000, n_items=300, seed=0), n_negatives=20, seed=0)
    groups = user_groups_by_popularity(split)
    iid = partition_users(1000, scheme="iid", num_partitions=20, seed=0)
    skewed = partition_users(1000, scheme="dirichlet", num_partitions=20, alpha=0.1, seed=0, user_groups=groups)
    mild = partition_users(1000, scheme="dirichlet", num_partitions=20, alpha=100.0, seed=0, user_groups=groups)
    assert_exact_cover(skewed, 1000)
    assert group_skew(skewed, groups) > group_skew(iid, groups) + 0.3
    assert group_skew(mild, groups) < group_skew(skewed, groups)


def test_dirichlet_default_groups_are_seeded() -> None:
    first = partition_users(300, scheme="dirichlet", num_partitions=7, alpha=0.3, seed=5)
    again = partition_users(300, scheme="dirichlet", num_partitions=7, alpha=0.3, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert_exact_cover(first, 300)


def test_groups_by_popularity_separate_mainstream_from_niche() -> None:
    # items 0-1 popular (4 users each), items 2-5 niche (1 user each)
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (4, 3), (4, 4), (4, 5)]
    users, items = (np.array(column, dtype=np.int64) for column in zip(*pairs))
    split = SplitData(
        6, 6, users, items, np.full(6, -1, dtype=np.int64), np.full((6, 1), -1, dtype=np.int64)
    )  # user 5 has no items
    labels = user_groups_by_popularity(split, n_groups=3)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_users": 0, "scheme": "iid", "num_partitions": 1}, "n_users"),
        ({"n_users": 10, "scheme": "random"}, "scheme"),
        ({"n_users": 10, "scheme": "user", "num_partitions": 3}, "num_partitions"),
        ({"n_users": 10, "scheme": "iid"}, "num_partitions"),
        ({"n_users": 10, "scheme": "iid", "num_partitions": 11}, "num_partitions"),
        ({"n_users": 10, "scheme": "dirichlet", "num_partitions": 0}, "num_partitions"),
        ({"n_users": 10, "scheme": "dirichlet", "num_partitions": 2, "alpha": 0.0}, "alpha"),
        (
            {"n_users": 10, "scheme": "dirichlet", "num_partitions": 2, "user_groups": np.zeros(9, int)},
            "user_groups",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        partition_users(**kwargs)
