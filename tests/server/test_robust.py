"""Robust aggregation's parts: references that leave the judged reply out, clipping, the
trust region per row, capped weights, coordinate-wise median and trimmed mean."""

import math

import numpy as np
import pytest

from prunus.common.update import Dense, Factored, Sparse, nonzeros
from prunus.server.robust import (
    capped_weights,
    clip_bounds,
    clip_rows,
    coordinate_wise,
    others_quantile,
    outliers,
    quantile_support,
    row_bounds,
    row_norms,
    scaled,
    update_norm,
)

SHAPES = {"t": (4, 2)}


def _dense(rows: dict[int, list[float]]) -> dict:
    table = np.zeros((4, 2), np.float32)
    for r, v in rows.items():
        table[r] = v
    return {"t": Dense(table)}


def test_each_value_is_judged_against_the_other_values_only():
    np.testing.assert_array_equal(others_quantile([1.0, 2.0, 3.0, 100.0], 0.5), [3.0, 3.0, 2.0, 2.0])
    np.testing.assert_array_equal(others_quantile([1.0, 1e30], 0.5), [1e30, 1.0])  # two replies: each the other
    np.testing.assert_array_equal(others_quantile([5.0, 1e30, 1e30], 0.5), [1e30, 5.0, 5.0])  # the lower median
    assert np.isnan(others_quantile([3.0], 0.5)).all() and others_quantile([], 0.5).size == 0
    np.testing.assert_array_equal(others_quantile([4.0, 1.0, 3.0, 2.0], 1.0), [3.0, 4.0, 4.0, 4.0])


def test_the_bound_is_the_smaller_of_the_fixed_one_and_the_others_quantile():
    assert np.isinf(clip_bounds([1.0, 2.0, 3.0], 0.0, 0.0)).all()
    np.testing.assert_array_equal(clip_bounds([1.0, 2.0, 3.0], 2.5, 0.0), [2.5, 2.5, 2.5])
    np.testing.assert_array_equal(clip_bounds([1.0, 2.0, 3.0], 0.0, 1.0), [3.0, 3.0, 2.0])
    np.testing.assert_array_equal(clip_bounds([1.0, 2.0, 3.0], 2.5, 1.0), [2.5, 2.5, 2.0])
    np.testing.assert_array_equal(clip_bounds([7.0], 2.5, 0.9), [2.5])  # no other reply: the fixed bound alone


def test_a_quantile_is_used_only_where_enough_other_replies_estimate_it():
    assert [quantile_support(q) for q in (0.5, 0.8, 0.9, 0.95, 1.0)] == [2, 5, 10, 20, 1]
    assert np.isinf(clip_bounds([1.0, 3.0], 0.0, 0.9)).all()  # one other reply: the larger is not cut to the smaller
    assert np.isinf(clip_bounds(list(range(1, 11)), 0.0, 0.9)).all()  # 9 others
    norms = [float(n) for n in range(1, 12)] + [1e30]  # 11 others each
    bounds = clip_bounds(norms, 0.0, 0.9)
    assert bounds[-1] == 10.0 and bounds[0] == 11.0  # the 0.9 quantile of the others: never their largest


def test_every_update_form_scales_and_measures_alike():
    dense = np.array([[3.0, 0.0], [0.0, 4.0], [0, 0], [0, 0]], np.float32)
    right = np.array([[0.6, 0.8], [-0.8, 0.6]], np.float32)  # orthonormal rows: left @ right keeps row norms
    factored = Factored(dense @ right.T, right, (4, 2))
    for update in ({"t": Dense(dense)}, {"t": nonzeros(dense)}, {"t": factored}):
        assert update_norm(scaled(update, 0.2)) == pytest.approx(1.0, rel=1e-6)
        np.testing.assert_allclose(row_norms(update["t"]), [3.0, 4.0, 0.0, 0.0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("form", ["dense", "sparse", "factored"])
def test_a_row_above_its_trust_region_is_scaled_down_to_it_and_the_rest_kept(form):
    model = {"t": np.array([[3.0, 4.0], [0, 0], [0, 0], [0, 0]], np.float32)}  # row 0: norm 5
    bounds = row_bounds(model, 2.0, 1.0)  # max(2 x |w_r|, 1 x sqrt(2))
    np.testing.assert_allclose(bounds["t"], [10.0, math.sqrt(2), math.sqrt(2), math.sqrt(2)])
    dense = np.array([[60.0, 80.0], [0.3, 0.4], [1e30, 0.0], [0, 0]], np.float32)
    update = {"dense": {"t": Dense(dense)}, "sparse": {"t": nonzeros(dense)},
              "factored": {"t": Factored(dense, np.eye(2, dtype=np.float32), (4, 2))}}[form]
    out, rows, worst = clip_rows(update, bounds)
    assert rows == 2 and worst == pytest.approx(1e30 / math.sqrt(2), rel=1e-5)
    np.testing.assert_allclose(row_norms(out["t"]), [10.0, 0.5, math.sqrt(2), 0.0], rtol=1e-5)
    np.testing.assert_allclose(row_norms(out["t"])[0] * np.array([0.6, 0.8]), [6.0, 8.0], rtol=1e-5)  # direction kept
    assert clip_rows({"t": Dense(np.zeros((4, 2), np.float32))}, bounds)[1:] == (0, 1.0)


def test_a_weight_counts_at_most_the_cap_times_the_others_median():
    assert capped_weights([10.0, 20.0, 30.0, 1e30], 10.0) == [10.0, 20.0, 30.0, 200.0]
    assert capped_weights([50.0, 1e30], 2.0) == [50.0, 100.0]  # two replies: capped against the other
    assert capped_weights([1e30], 2.0) == [1e30]  # alone: the round is its reply whatever it weighs
    assert capped_weights([1.0, 1e30], 0.0) == [1.0, 1e30]  # 0: as reported


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


def test_replies_far_above_the_others_median_norm_are_left_out():
    honest = [1.0, 1.2, 0.9, 1.1]
    assert outliers(honest + [200.0], 10.0) == [4]
    assert outliers(honest + [200.0], 0.0) == [] and outliers([], 10.0) == []
    assert outliers([1.0, 1e30], 10.0) == [1]  # a round of two: the median of both would keep it
    assert outliers([1.0, 1e30, 1e30], 10.0) == [1, 2]  # two of three: the lower median of the others
    assert outliers([1e30], 10.0) == [] and outliers([0.0, 5.0], 10.0) == []  # nothing to judge against
