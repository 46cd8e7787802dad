import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.pruning import PruneSpec, prune_update
from prunus.common.update import Dense, Factored, nonzeros, to_dense
from prunus.server.aggregation import aggregate

SHAPES = {"items": (3, 2), "bias": (3,)}


def _sparse(dense: dict[str, np.ndarray]):
    return {name: nonzeros(np.asarray(value, np.float32)) for name, value in dense.items()}


def _dense(dense: dict[str, np.ndarray]):
    return {name: Dense(np.asarray(value, np.float32)) for name, value in dense.items()}


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


def test_a_tensor_that_is_no_update_form_is_an_error():
    update = {"w": (np.array([0]), np.array([1.0], np.float32), (2, 1))}  # a bare tuple, not a Sparse
    with pytest.raises(TypeError, match="not an update form"):
        aggregate([(update, 1.0)], {"w": (2, 1)}, row_averaging=True)


def _random_update(rng, shapes, zero_rows=0.4, zero_entries=0.3):
    """Dense float32 tensors with some all-zero rows and some zero entries."""
    out = {}
    for name, shape in shapes.items():
        rows = shape[0] if shape else 1
        x = rng.normal(size=shape).astype(np.float32) * (rng.random(shape) >= zero_entries)
        x = x * (rng.random(rows) >= zero_rows).reshape((rows,) + (1,) * (len(shape) - 1)) if shape else x
        out[name] = x.astype(np.float32)
    return out


MIXED_SHAPES = {"items": (7, 3), "bias": (7, 1), "w": (4,), "cube": (3, 2, 2)}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), clients=st.integers(1, 6), row_averaging=st.booleans(),
       forms=st.lists(st.booleans(), min_size=6, max_size=6))
def test_a_dense_update_aggregates_bit_identically_to_its_non_zeros(seed, clients, row_averaging, forms):
    rng = np.random.default_rng(seed)
    dense = [(_random_update(rng, MIXED_SHAPES), float(rng.integers(1, 50))) for _ in range(clients)]
    as_sparse = aggregate([(_sparse(u), w) for u, w in dense], MIXED_SHAPES, row_averaging)
    as_dense = aggregate([(_dense(u), w) for u, w in dense], MIXED_SHAPES, row_averaging)
    # and any mix of the two forms, client by client
    mixed = aggregate([(_dense(u) if f else _sparse(u), w) for (u, w), f in zip(dense, forms)], MIXED_SHAPES, row_averaging)
    for name in MIXED_SHAPES:
        np.testing.assert_array_equal(as_dense[name], as_sparse[name])
        np.testing.assert_array_equal(mixed[name], as_sparse[name])
        assert as_dense[name].dtype == np.float32 and as_dense[name].shape == MIXED_SHAPES[name]


def test_a_dense_update_touches_only_its_non_zero_rows():
    a = {"items": np.array([[2.0, 2.0], [0.0, 0.0], [4.0, 0.0]], np.float32), "bias": np.array([1.0, 0.0, 0.0], np.float32)}
    b = {"items": np.array([[4.0, 0.0], [6.0, 6.0], [0.0, 0.0]], np.float32), "bias": np.array([3.0, 2.0, 0.0], np.float32)}
    out = aggregate([(_dense(a), 1.0), (_dense(b), 1.0)], SHAPES, row_averaging=True)
    np.testing.assert_allclose(out["items"], [[3.0, 1.0], [6.0, 6.0], [4.0, 0.0]])
    np.testing.assert_allclose(out["bias"], [2.0, 2.0, 0.0])


def _factored(rng, shape, rank, zero_rows=0.4):
    """A random Factored update whose `left` has some all-zero rows."""
    rows = shape[0] if shape else 1
    width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    left = rng.normal(size=(rows, rank)).astype(np.float32) * (rng.random((rows, 1)) >= zero_rows)
    right = rng.normal(size=(rank, width)).astype(np.float32)
    return Factored(left.astype(np.float32), right, tuple(shape))


def _reference_with_rows(updates, shapes, row_averaging):
    """Dense reference in float64; a row counts as touched where `touched` says."""
    out = {}
    for name, shape in shapes.items():
        rows = shape[0] if shape else 1
        total = np.zeros((rows, int(np.prod(shape)) // rows))
        weight = np.zeros(rows)
        for update, w, touched in updates:
            total += w * update[name].astype(np.float64).reshape(rows, -1)
            weight += w * touched[name] if row_averaging else w
        scale = np.divide(1.0, weight, out=np.zeros_like(weight), where=weight > 0)
        out[name] = (total * scale[:, None]).reshape(shape)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), clients=st.integers(1, 6), rank=st.integers(1, 3), row_averaging=st.booleans())
def test_factored_updates_aggregate_to_their_dense_product(seed, clients, rank, row_averaging):
    rng = np.random.default_rng(seed)
    updates = []
    for _ in range(clients):
        update = {name: _factored(rng, shape, rank) for name, shape in MIXED_SHAPES.items()}
        updates.append((update, float(rng.integers(1, 50))))
    got = aggregate(updates, MIXED_SHAPES, row_averaging)
    products = [({n: to_dense(t) for n, t in u.items()}, w) for u, w in updates]
    want = aggregate([(_dense(p), w) for p, w in products], MIXED_SHAPES, row_averaging)
    exact = _reference_with_rows(
        [({n: t.left.astype(np.float64) @ t.right.astype(np.float64) for n, t in u.items()}, w,
          {n: t.left.any(axis=1) for n, t in u.items()}) for u, w in updates],
        MIXED_SHAPES, row_averaging)  # fmt: skip
    for name in MIXED_SHAPES:
        assert got[name].dtype == np.float32 and got[name].shape == MIXED_SHAPES[name]
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[name], exact[name], rtol=1e-6, atol=1e-7)


def test_factored_updates_mix_with_dense_and_sparse_ones():
    rng = np.random.default_rng(5)
    shapes = {"items": (6, 4)}
    f = _factored(rng, shapes["items"], 2)
    d = _random_update(rng, shapes)
    s = _random_update(rng, shapes)
    got = aggregate([({"items": f}, 2.0), (_dense(d), 1.0), (_sparse(s), 3.0)], shapes, row_averaging=True)
    want = _reference_with_rows(
        [({"items": to_dense(f)}, 2.0, {"items": f.left.any(axis=1)}),
         (d, 1.0, {"items": d["items"].any(axis=1)}), (s, 3.0, {"items": s["items"].any(axis=1)})],
        shapes, row_averaging=True)  # fmt: skip
    np.testing.assert_allclose(got["items"], want["items"], rtol=1e-5, atol=1e-6)


def test_row_averaging_counts_the_rows_where_left_is_non_zero():
    """A factored update touches the rows its `left` factor has a non-zero in,
    even where the product happens to be zero there."""
    left = np.array([[1.0, -1.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    right = np.array([[1.0, 1.0], [1.0, 1.0]], np.float32)  # row 0 of the product: 1 - 1 = 0
    factored = {"items": Factored(left, right, (3, 2))}
    other = {"items": np.array([[2.0, 2.0], [4.0, 4.0], [0.0, 0.0]], np.float32)}
    out = aggregate([(factored, 1.0), (_sparse(other), 1.0)], {"items": (3, 2)}, row_averaging=True)
    np.testing.assert_allclose(out["items"], [[1.0, 1.0], [4.0, 4.0], [1.0, 1.0]])
    # the same product sent dense does not touch row 0
    dense = aggregate([(_dense({"items": to_dense(factored["items"])}), 1.0), (_sparse(other), 1.0)],
                      {"items": (3, 2)}, row_averaging=True)  # fmt: skip
    np.testing.assert_allclose(dense["items"], [[2.0, 2.0], [4.0, 4.0], [1.0, 1.0]])


def test_the_config_knows_exactly_the_registered_aggregators():
    from prunus.common.config import AGGREGATORS as CONFIG_CHOICES
    from prunus.server.aggregators import AGGREGATORS

    assert CONFIG_CHOICES == AGGREGATORS.names()
