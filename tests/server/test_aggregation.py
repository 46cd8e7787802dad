import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.pruning import PruneSpec, prune_update
from prunus.server.aggregation import aggregate

SHAPES = {"items": (3, 2), "bias": (3,)}


def _sparse(dense: dict[str, np.ndarray]):
    out = {}
    for name, value in dense.items():
        idx = np.flatnonzero(value)
        out[name] = (idx, value.ravel()[idx].astype(np.float32), value.shape)
    return out


def _dense_reference(updates, shapes, row_averaging):
    """The obvious dense computation, written independently of the scatter-add."""
    out = {}
    for name, shape in shapes.items():
        stack = np.stack([u[name] for u, _ in updates]).astype(np.float64)
        w = np.array([w for _, w in updates], dtype=np.float64)
        if row_averaging:
            touched = stack.reshape(len(updates), shape[0], -1).any(axis=2)
            row_w = (touched * w[:, None]).sum(0)
            total = np.tensordot(w, stack, axes=1).reshape(shape[0], -1)
            out[name] = np.where(row_w[:, None] > 0, total / np.where(row_w > 0, row_w, 1)[:, None], 0).reshape(shape)
        else:
            out[name] = np.tensordot(w, stack, axes=1) / w.sum()
    return out


def test_row_averaging_averages_each_row_over_the_clients_that_touched_it():
    a = {"items": np.array([[2.0, 2.0], [0.0, 0.0], [4.0, 0.0]], np.float32), "bias": np.array([1.0, 0.0, 0.0], np.float32)}
    b = {"items": np.array([[4.0, 0.0], [6.0, 6.0], [0.0, 0.0]], np.float32), "bias": np.array([3.0, 2.0, 0.0], np.float32)}
    out = aggregate([(_sparse(a), 1.0), (_sparse(b), 1.0)], SHAPES, row_averaging=True)
    np.testing.assert_allclose(out["items"], [[3.0, 1.0], [6.0, 6.0], [4.0, 0.0]])
    np.testing.assert_allclose(out["bias"], [2.0, 2.0, 0.0])


def test_fedavg_is_the_weighted_mean_over_all_clients():
    a = {"w": np.array([[1.0], [0.0]], np.float32)}
    b = {"w": np.array([[4.0], [3.0]], np.float32)}
    out = aggregate([(_sparse(a), 1.0), (_sparse(b), 2.0)], {"w": (2, 1)}, row_averaging=False)
    np.testing.assert_allclose(out["w"], [[3.0], [2.0]])


def test_empty_round_is_an_error():
    with pytest.raises(ValueError):
        aggregate([], SHAPES, row_averaging=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    clients=st.integers(1, 6),
    density=st.floats(0.05, 1.0),
    method=st.sampled_from(["topk", "randomk", "rows", "topk-global"]),
    row_averaging=st.booleans(),
)
def test_sparse_aggregation_equals_aggregating_the_densified_updates(seed, clients, density, method, row_averaging):
    rng = np.random.default_rng(seed)
    shapes = {"items": (7, 3), "bias": (7, 1), "w": (4,)}
    updates_sparse, updates_dense = [], []
    for _ in range(clients):
        delta = {n: (rng.normal(size=s) * (rng.random(s) < 0.6)).astype(np.float32) for n, s in shapes.items()}
        result = prune_update(delta, None, PruneSpec(method=method, density=density), density, rng)
        weight = float(rng.integers(1, 50))
        updates_sparse.append((result.sparse, weight))
        updates_dense.append((result.sent_dense, weight))
    got = aggregate(updates_sparse, shapes, row_averaging)
    want = _dense_reference(updates_dense, shapes, row_averaging)
    for name in shapes:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
