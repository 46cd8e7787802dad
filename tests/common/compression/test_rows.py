"""Every registered row selection: what a client asks for and what the server sends.

Parametrised over `ROWS.names()`: plans are functions of (client secret,
seed, round, partition), choices of (seed, round) and what was observed, rows are sorted unique ids in range,
a client's plan holds what it needs and its negatives' pool.
"""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.compression import ROWS, RoundContext, make
from prunus.common.config import Config

N_ITEMS = 500
NEEDED = np.array([3, 17, 40, 41, 300])


def _selection(name: str, **settings):
    return make(ROWS, name, Config.of(broadcast_rows=name, **settings))


def _valid(ids: np.ndarray) -> bool:
    return ids.dtype == np.int64 and (np.diff(ids) > 0).all() and 0 <= ids[0] and ids[-1] < N_ITEMS


@pytest.mark.parametrize("name", ROWS.names())
def test_plans_and_rows_are_deterministic_and_valid(name):
    ctx = RoundContext(server_round=4, partition_id=7, seed=1)
    first, again = _selection(name), _selection(name)
    plan = first.plan(NEEDED, N_ITEMS, ctx)
    assert (plan is None) == (again.plan(NEEDED, N_ITEMS, ctx) is None)
    request = None
    if plan is not None:
        np.testing.assert_array_equal(plan.request, again.plan(NEEDED, N_ITEMS, ctx).request)
        assert _valid(plan.request) and set(NEEDED) <= set(plan.request) and set(plan.negatives) <= set(plan.request)
        request = plan.request
    for purpose in ("train", "evaluate"):
        rows = first.rows(4, request, N_ITEMS, purpose, 1)
        other = again.rows(4, request, N_ITEMS, purpose, 1)
        assert (rows is None) == (other is None)
        if rows is not None:
            np.testing.assert_array_equal(rows, other)
            assert _valid(rows)


def test_a_request_is_the_needed_rows_a_pool_and_padding():
    ctx = RoundContext(server_round=1, partition_id=0, seed=0)
    plan = _selection("requested", negative_pool=4.0).plan(NEEDED, N_ITEMS, ctx)
    padded = _selection("requested", negative_pool=4.0, request_pad=10.0).plan(NEEDED, N_ITEMS, ctx)
    assert len(plan.negatives) == 20 and len(plan.request) <= 25
    np.testing.assert_array_equal(plan.negatives, padded.negatives)  # padding is asked for, never trained on
    assert len(padded.request) == len(plan.request) + 50
    other_round = _selection("requested", negative_pool=4.0).plan(NEEDED, N_ITEMS, RoundContext(2, 0, 0))
    assert not np.array_equal(plan.negatives, other_round.negatives)
    other_secret = _selection("requested", negative_pool=4.0).plan(NEEDED, N_ITEMS, RoundContext(1, 0, 0, secret=1))
    assert not np.array_equal(plan.negatives, other_secret.negatives)


def test_a_pool_is_never_smaller_than_its_floor_nor_the_catalogue():
    ctx = RoundContext(server_round=1, partition_id=0, seed=0)
    assert len(_selection("requested", negative_pool=4.0, negative_pool_min=60).plan(NEEDED, N_ITEMS, ctx).negatives) == 60
    assert len(_selection("requested", negative_pool=4.0, negative_pool_min=10).plan(NEEDED, N_ITEMS, ctx).negatives) == 20
    whole = _selection("requested", negative_pool_min=10 * N_ITEMS).plan(NEEDED, N_ITEMS, ctx)
    np.testing.assert_array_equal(whole.negatives, np.arange(N_ITEMS))


def test_the_bandit_sends_its_share_and_learns_which_rows_pay():
    bandit = _selection("bandit", bandit_items=0.2)
    chosen = bandit.rows(1, None, N_ITEMS, "train", 0)
    assert len(chosen) == 100 and bandit.rows(1, None, N_ITEMS, "evaluate", 0) is None
    step = {"item_embedding.weight": np.zeros((N_ITEMS, 2)), "item_bias.weight": np.zeros((N_ITEMS, 1))}
    step["item_embedding.weight"][chosen[:10]] = 1.0  # ten of the rows moved, the others did not
    for server_round in range(1, 30):
        sent = bandit.rows(server_round, None, N_ITEMS, "train", 0)
        bandit.observe(server_round, step, ("item_embedding.weight", "item_bias.weight"))
    assert set(chosen[:10]) <= set(sent)  # rewarded rows keep being sent
    assert len(set(chosen[10:]) & set(sent)) < 45  # rows that never paid are sent less than at random
