"""Robust aggregation: clipping, coordinate-wise median and trimmed mean."""

import math

import numpy as np
import pytest

from prunus.common.update import Dense, Factored, Sparse, nonzeros
from prunus.server.robust import clip, clip_bound, coordinate_wise, outliers, update_norm

SHAPES = {"t": (4, 2)}


def _dense(rows: dict[int, list[float]]) -> dict:
    table = np.zeros((4, 2), np.float32)
    for r, v in rows.items():
        table[r] = v
    return {"t": Dense(table)}


def test_the_bound_is_the_smaller_of_the_fixed_one_and_the_quantile():
    assert clip_bound([1.0, 2.0, 3.0], 0.0, 0.0) == math.inf
    assert clip_bound([1.0, 2.0, 3.0], 2.5, 0.0) == 2.5
    assert clip_bound([1.0, 2.0, 3.0], 0.0, 0.5) == 2.0
    assert clip_bound([1.0, 2.0, 3.0], 1.5, 0.5) == 1.5


def test_a_reply_a_hundred_times_too_large_is_clipped_to_the_rounds_quantile():
    honest = [_dense({0: [1.0, 0.0]}), _dense({0: [0.0, 1.0]}), _dense({1: [1.0, 1.0]})]
    hostile = _dense({0: [100.0, 100.0]})
    out, clipped = clip([*honest, hostile], 0.0, 0.75)
    assert clipped == 1
    assert update_norm(out[3]) == pytest.approx(float(np.quantile([1, 1, math.sqrt(2), 100 * math.sqrt(2)], 0.75)))
    assert all(o is h for o, h in zip(out[:3], honest))  # under the bound: untouched


def test_every_update_form_scales_and_measures_alike():
    dense = np.array([[3.0, 0.0], [0.0, 4.0], [0, 0], [0, 0]], np.float32)
    left, right = np.array([[1.0], [2.0], [0], [0]], np.float32), np.array([[3.0, 0.0]], np.float32)
    for update in ({"t": Dense(dense)}, {"t": nonzeros(dense)}, {"t": Factored(left, right, (4, 2))}):
        (scaled,), _ = clip([update], 1.0, 0.0)
        assert update_norm(scaled) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("form", ["dense", "sparse"])
def test_the_median_and_trimmed_mean_ignore_a_minority_of_extreme_rows(form):
    clients = [_dense({0: [1.0, 2.0]}), _dense({0: [1.2, 2.2], 2: [5.0, 5.0]}), _dense({0: [0.8, 1.8]}),
               _dense({0: [1e6, -1e6]})]  # fmt: skip
    if form == "sparse":
        clients = [{"t": nonzeros(c["t"].values)} for c in clients]
    median = coordinate_wise(clients, SHAPES, None)["t"]
    np.testing.assert_allclose(median[0], [1.1, 1.9], rtol=1e-6)  # per coordinate, the mean of the middle two
    np.testing.assert_allclose(median[2], [5.0, 5.0])  # one client touched it: its value
    assert not median[[1, 3]].any()  # nobody touched them
    trimmed = coordinate_wise(clients, SHAPES, 0.25)["t"]  # one of four off each end
    np.testing.assert_allclose(trimmed[0], [1.1, 1.9], rtol=1e-6)


def test_a_sparse_row_counts_its_unsent_entries_as_zero():
    a = {"t": Sparse(np.array([0]), np.array([2.0], np.float32), (4, 2))}  # row 0 touched, entry 1 unsent
    b = {"t": Sparse(np.array([0, 1]), np.array([4.0, 6.0], np.float32), (4, 2))}
    np.testing.assert_allclose(coordinate_wise([a, b], SHAPES, None)["t"][0], [3.0, 3.0])


def test_replies_far_above_the_median_norm_are_left_out():
    honest = [{"t": Dense(np.full((2, 2), v, np.float32))} for v in (1.0, 1.2, 0.9, 1.1)]
    attack = {"t": Dense(np.full((2, 2), -100.0, np.float32))}
    assert outliers(honest + [attack], 10.0) == [4]
    assert outliers(honest + [attack], 0.0) == [] and outliers([], 10.0) == []
