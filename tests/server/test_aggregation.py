import numpy as np
import pytest

from server.aggregation import aggregate


def test_row_averaging_averages_each_row_over_the_clients_that_touched_it():
    a = {"items": np.array([[2.0, 2.0], [0.0, 0.0], [4.0, 0.0]], np.float32), "bias": np.array([1.0, 0.0, 0.0], np.float32)}
    b = {"items": np.array([[4.0, 0.0], [6.0, 6.0], [0.0, 0.0]], np.float32), "bias": np.array([3.0, 2.0, 0.0], np.float32)}
    out = aggregate([(a, 1.0), (b, 1.0)], row_averaging=True)
    np.testing.assert_allclose(out["items"], [[3.0, 1.0], [6.0, 6.0], [4.0, 0.0]])
    np.testing.assert_allclose(out["bias"], [2.0, 2.0, 0.0])


def test_fedavg_is_the_weighted_mean_over_all_clients():
    a = {"w": np.array([[1.0], [0.0]], np.float32)}
    b = {"w": np.array([[4.0], [3.0]], np.float32)}
    out = aggregate([(a, 1.0), (b, 2.0)], row_averaging=False)
    np.testing.assert_allclose(out["w"], [[3.0], [2.0]])


def test_empty_round_is_an_error():
    with pytest.raises(ValueError):
        aggregate([], row_averaging=True)
