"""Leave-one-out splits: the right item is held out and negatives are true negatives."""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.data import Interactions, SplitData, generate_synthetic, leave_one_out, sample_negatives, to_implicit


def interactions(rows: list[tuple[int, int, float, int]], n_users: int, n_items: int) -> Interactions:
    users, items, ratings, times = (np.array(column) for column in zip(*rows))
    return Interactions(
        users.astype(np.int64),
        items.astype(np.int64),
        ratings.astype(np.float32),
        times.astype(np.int64),
        n_users,
        n_items,
    )


SMALL = interactions(
    [
        # user 0: latest is item 2 (t=30)
        (0, 5, 4, 10), (0, 2, 5, 30), (0, 7, 3, 20),
        # user 1: single interaction, stays in train
        (1, 3, 2, 5),
        # user 2: tie at t=50 goes to the larger item id (9)
        (2, 1, 4, 50), (2, 9, 4, 50), (2, 4, 1, 40),
        # user 3: item 6 rated twice; the latest copy (t=70) is what counts
        (3, 6, 1, 60), (3, 8, 5, 65), (3, 6, 4, 70),
    ],
    n_users=5,  # user 4 has no interactions
    n_items=120,
)


def positives(data: Interactions) -> set[tuple[int, int]]:
    return set(zip(data.users.tolist(), data.items.tolist()))


def test_leave_one_out_holds_out_latest() -> None:
    split = leave_one_out(SMALL, n_negatives=10, seed=0)
    np.testing.assert_array_equal(split.test_items, [2, -1, 9, 6, -1])
    np.testing.assert_array_equal(split.user_items(0), [5, 7])
    np.testing.assert_array_equal(split.user_items(1), [3])
    np.testing.assert_array_equal(split.user_items(2), [1, 4])
    np.testing.assert_array_equal(split.user_items(3), [8])  # both copies of item 6 are gone from train
    np.testing.assert_array_equal(split.indptr, [0, 2, 3, 5, 6, 6])
    np.testing.assert_array_equal(split.train_timestamps, [10, 20, 5, 50, 40, 65])
    assert (split.test_negatives[[1, 4]] == -1).all()


def test_negatives_are_distinct_true_negatives() -> None:
    data = generate_synthetic(n_users=300, n_items=250, seed=3)
    split = leave_one_out(data, n_negatives=99, seed=1)
    assert split.test_negatives.shape == (300, 99)
    assert (split.test_items >= 0).all()
    users = np.repeat(np.arange(300), 99)
    keys = users * 250 + split.test_negatives.ravel()
    all_positive_keys = data.users * 250 + data.items
    assert not np.isin(keys, all_positive_keys).any()  # neither train nor test positives
    assert not (split.test_negatives == split.test_items[:, None]).any()
    sorted_rows = np.sort(split.test_negatives, axis=1)
    assert (np.diff(sorted_rows, axis=1) > 0).all()
    assert split.test_negatives.min() >= 0 and split.test_negatives.max() < 250
    # uniform over non-interacted items: no item is grossly over-sampled
    assert np.bincount(split.test_negatives.ravel(), minlength=250).max() < 3 * 300 * 99 / 250


def test_split_is_seeded() -> None:
    data = generate_synthetic(n_users=100, n_items=150, seed=0)
    first, again, other = (leave_one_out(data, n_negatives=20, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(first.test_negatives, again.test_negatives)
    np.testing.assert_array_equal(first.test_items, again.test_items)
    assert not np.array_equal(first.test_negatives, other.test_negatives)


def test_without_timestamps_holds_out_a_seeded_random_positive() -> None:
    data = generate_synthetic(n_users=200, n_items=150, seed=0)
    untimed = Interactions(data.users, data.items, data.ratings, None, data.n_users, data.n_items)
    split = leave_one_out(untimed, n_negatives=5, seed=7)
    pairs = positives(data)
    assert all((u, i) in pairs for u, i in enumerate(split.test_items.tolist()))
    assert len(split.train_users) == len(data) - 200
    np.testing.assert_array_equal(split.test_items, leave_one_out(untimed, n_negatives=5, seed=7).test_items)
    latest = leave_one_out(data, n_negatives=5, seed=7).test_items
    assert (split.test_items != latest).mean() > 0.5  # random, not the latest


def test_to_implicit_filters_and_keeps_latest_duplicate() -> None:
    implicit = to_implicit(SMALL, min_rating=4)
    assert positives(implicit) == {(0, 5), (0, 2), (2, 1), (2, 9), (3, 8), (3, 6)}
    row = np.flatnonzero((implicit.users == 3) & (implicit.items == 6))
    assert implicit.timestamps[row].tolist() == [70]
    assert (implicit.n_users, implicit.n_items) == (5, 120)
    assert len(to_implicit(SMALL)) == len(SMALL) - 1
    with pytest.raises(ValueError, match="min_rating"):
        to_implicit(Interactions(SMALL.users, SMALL.items, None, None, 5, 120), min_rating=3)


def test_validation_never_sees_the_test_item() -> None:
    data = generate_synthetic(n_users=200, n_items=300, seed=2)
    split = leave_one_out(data, n_negatives=50, seed=0)
    tuning = split.validation(seed=1, n_negatives=50)
    train_keys = tuning.train_users * 300 + tuning.train_items
    test_keys = np.arange(200) * 300 + split.test_items
    assert not np.isin(test_keys, train_keys).any()
    assert not (tuning.test_items == split.test_items).any()
    # the validation item is each user's latest remaining train interaction
    for user in range(0, 200, 17):
        items = split.user_items(user)
        times = split.train_timestamps[split.indptr[user] : split.indptr[user + 1]]
        assert tuning.test_items[user] == items[np.argmax(times)]
    # negatives avoid train, validation and test items alike
    negative_keys = np.repeat(np.arange(200), 50) * 300 + tuning.test_negatives.ravel()
    assert not np.isin(negative_keys, data.users * 300 + data.items).any()
    assert len(tuning.train_users) == len(split.train_users) - 200


def test_validation_skips_users_with_one_train_item() -> None:
    tuning = leave_one_out(SMALL, n_negatives=10, seed=0).validation(seed=0, n_negatives=10)
    np.testing.assert_array_equal(tuning.test_items, [7, -1, 1, -1, -1])  # latest remaining train items
    assert (tuning.test_negatives[[1, 3, 4]] == -1).all()
    np.testing.assert_array_equal(tuning.user_items(2), [4])
    np.testing.assert_array_equal(tuning.user_items(3), [8])


def test_validation_without_timestamps_is_seeded() -> None:
    split = leave_one_out(generate_synthetic(n_users=50, n_items=200, seed=0), n_negatives=10, seed=0)
    untimed = SplitData(
        split.n_users, split.n_items, split.train_users, split.train_items, split.test_items, split.test_negatives
    )
    first, again = untimed.validation(seed=3), untimed.validation(seed=3)
    np.testing.assert_array_equal(first.test_items, again.test_items)
    np.testing.assert_array_equal(first.test_negatives, again.test_negatives)


def test_too_few_candidates_raise() -> None:
    with pytest.raises(ValueError, match="user 0 has only 117 items it never interacted with"):
        leave_one_out(SMALL, n_negatives=118, seed=0)


def test_sample_negatives_can_exhaust_the_complement() -> None:
    excluded = np.array([0, 1, 2, 10 + 5], dtype=np.int64)  # user 0: items 0-2, user 1: item 5
    drawn = sample_negatives(np.random.default_rng(0), excluded, np.array([0, 1]), 10, 7)
    assert sorted(drawn[0].tolist()) == list(range(3, 10))
    assert 5 not in drawn[1] and len(set(drawn[1].tolist())) == 7


def test_split_data_rejects_unsorted_train() -> None:
    with pytest.raises(ValueError, match="sorted"):
        SplitData(
            2, 3, np.array([1, 0]), np.array([0, 1]), np.array([-1, -1]), np.full((2, 1), -1, dtype=np.int64)
        )


def test_subset_renumbers_users_and_keeps_items() -> None:
    split = leave_one_out(SMALL, n_negatives=2, seed=0)
    users = np.array([2, 4, 0])
    sub = split.subset(users)
    assert sub.n_users == 3 and sub.n_items == split.n_items
    for row, user in enumerate(users):
        np.testing.assert_array_equal(sub.user_items(row), split.user_items(user))
    np.testing.assert_array_equal(sub.test_items, split.test_items[users])
    np.testing.assert_array_equal(sub.test_negatives, split.test_negatives[users])
