"""Secure aggregation's content: the input layout adds up to the per-row mean
step, and every message field is checked before use."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.compression.uplink.lowrank import SharedProjection
from prunus.common.compression.uplink.none import EveryCoordinate
from prunus.common.compression.uplink.randomk import SharedRandomK
from prunus.common.payload import ConfigMap, Content
from prunus.common.secagg import messages
from prunus.common.secagg.messages import Layout
from prunus.common.secagg.protocol import ProtocolError
from prunus.common.secagg.ring import Ring

SHAPES = {"emb": (5, 3), "bias": (5, 1)}


def test_the_sum_of_inputs_decodes_to_the_per_row_mean_of_the_clients_that_touched_each_row():
    ring, layout, rng = Ring(32, 1.0, 10), Layout(SHAPES, EveryCoordinate()), np.random.default_rng(0)
    updates = []
    for rows in ([0, 1], [1], [1, 4]):
        update = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
        for name in SHAPES:
            update[name][rows] = rng.uniform(-0.5, 0.5, (len(rows), SHAPES[name][1]))
        updates.append(update)
    total = np.zeros(layout.length(ring), np.uint64)
    for update in updates:
        vector, carried = layout.encode(update, ring, rng, carried=True)
        total = ring.add(total, vector)
        assert all(np.array_equal(carried[name], update[name]) for name in SHAPES)  # every entry: nothing kept
    step, clipped = layout.decode(total, 3, ring, row_averaging=True)
    assert clipped == 0
    for name in SHAPES:
        stacked = np.stack([u[name] for u in updates])
        touched = (stacked != 0).any(axis=2).sum(axis=0)
        expected = np.where(touched[:, None] > 0, stacked.sum(axis=0) / np.maximum(touched, 1)[:, None], 0)
        np.testing.assert_allclose(step[name], expected, atol=1e-6)
    plain, _ = layout.decode(total, 3, ring, row_averaging=False)
    np.testing.assert_allclose(plain["emb"], np.mean([u["emb"] for u in updates], axis=0), atol=1e-6)


@pytest.mark.parametrize(("content", "read", "match"), [
    (Content(), messages.read_keys, "no ConfigMap"),
    (Content({"secagg": ConfigMap({"c": b"x", "s": "text", "commit": b"y"})}), messages.read_keys, "'s' is not bytes"),
    (Content({"secagg": ConfigMap({"ids": [1, 2], "sealed": [b"a"]})}), messages.read_sealed, "do not pair up"),
    (Content({"secagg": ConfigMap({"ids": [1, 1], "sealed": [b"a", b"b"]})}), messages.read_sealed, "do not pair up"),
    (Content({"secagg": ConfigMap({"ids": [1.0], "sealed": [b"a"]})}), messages.read_sealed, "not a list of ints"),
    (Content({"secagg": ConfigMap({"ids": [True], "shares": [b"a"]})}), messages.read_unmask_reply, "not a list of ints"),
    (Content({"secagg": ConfigMap({"ids": [1], "c": [b"a"], "s": []})}), messages.read_peers, "different lengths"),
    (Content({"secagg": ConfigMap({"survivors": [1], "dropped": "x"})}), messages.read_unmask_request, "'dropped'"),
])
def test_a_malformed_field_is_a_protocol_error(content, read, match):
    with pytest.raises(ProtocolError, match=match):
        read(content)


def test_a_masked_input_of_another_length_or_type_is_refused():
    ring = Ring(32, 1.0, 4)
    reply = messages.masked_reply(np.arange(6, dtype=np.uint64), ring)
    np.testing.assert_array_equal(messages.read_masked(reply, ring, 6), np.arange(6))
    with pytest.raises(ProtocolError, match="bytes for 7 elements"):
        messages.read_masked(reply, ring, 7)
    with pytest.raises(ProtocolError, match="one array 'y'"):
        messages.read_masked(Content(), ring, 6)


def test_a_round_of_shared_rows_carries_only_them_and_decodes_to_full_size():
    from prunus.common.config import Config
    from prunus.common.models import ModelSpec

    spec = ModelSpec({"emb": (20, 3), "bias": (20, 1), "dense": (2, 2)}, prunable=("emb",), item_tables=("emb", "bias"))
    cfg = Config.of(secure_aggregation=True, secure_rows=0.25)
    layout = messages.round_layout(cfg, 3, spec)
    np.testing.assert_array_equal(layout.rows["emb"], messages.round_layout(cfg, 3, spec).rows["emb"])
    assert len(layout.rows["emb"]) == 5 and layout.rows["emb"] is layout.rows["bias"]
    assert not np.array_equal(layout.rows["emb"], messages.round_layout(cfg, 4, spec).rows["emb"])
    ring, rng = Ring(32, 1.0, 4), np.random.default_rng(0)
    assert layout.length(ring) == 5 * 3 + 5 + 4 + (5 + 5 + 2) + 1  # values, one per row, the clipped count
    update = {"emb": np.ones((20, 3), np.float32) * 0.5, "bias": np.ones((20, 1), np.float32), "dense": np.eye(2, dtype=np.float32)}
    vector, carried = layout.encode(update, ring, rng, carried=True)
    step, _ = layout.decode(vector, 1, ring, row_averaging=True)
    ids = layout.rows["emb"]
    np.testing.assert_allclose(step["emb"][ids], 0.5, atol=1e-6)
    assert step["emb"].shape == (20, 3) and not np.delete(step["emb"], ids, axis=0).any()
    np.testing.assert_allclose(step["dense"], np.eye(2), atol=1e-6)
    np.testing.assert_array_equal(carried["emb"][ids], update["emb"][ids])  # the rest stays with the client
    assert not np.delete(carried["emb"], ids, axis=0).any()


@pytest.mark.parametrize("coords", [EveryCoordinate(), SharedRandomK(0.3, 5, 2), SharedProjection(2, 5, 2)],
                         ids=["every", "randomk", "lowrank"])
def test_the_sum_of_inputs_in_shared_coordinates_decodes_to_the_mean_of_what_each_carried(coords):
    shapes = {"emb": (6, 4), "bias": (6, 1)}
    ring, layout, rng = Ring(32, 2.0, 5), Layout(shapes, coords), np.random.default_rng(1)
    total, carried_all = np.zeros(layout.length(ring), np.uint64), []
    for _ in range(4):
        update = {name: rng.uniform(-0.5, 0.5, shape).astype(np.float32) for name, shape in shapes.items()}
        vector, carried = layout.encode(update, ring, rng, carried=True)
        total, carried_all = ring.add(total, vector), carried_all + [carried]
    assert layout.values == sum(coords.width(name, shape) for name, shape in shapes.items())
    step, _ = layout.decode(total, 4, ring, row_averaging=False)
    for name in shapes:
        np.testing.assert_allclose(step[name], np.mean([c[name] for c in carried_all], axis=0), atol=1e-6)


def test_shared_random_positions_depend_on_seed_round_and_tensor_alone():
    a, b = SharedRandomK(0.25, 5, 2), SharedRandomK(0.25, 5, 2)
    np.testing.assert_array_equal(a.positions("emb", 40), b.positions("emb", 40))
    assert len(a.positions("emb", 40)) == a.width("emb", (10, 4)) == 10
    assert not np.array_equal(a.positions("emb", 40), SharedRandomK(0.25, 5, 3).positions("emb", 40))
    assert not np.array_equal(a.positions("emb", 40), a.positions("bias", 40))


def test_the_shared_projection_keeps_what_lies_in_its_subspace_exactly():
    coords = SharedProjection(2, 5, 2)
    q = coords.factor("emb", 4)
    inside = (np.arange(12, dtype=np.float32).reshape(6, 2) @ q.T).astype(np.float32)
    np.testing.assert_allclose(coords.lift("emb", coords.project("emb", inside), (6, 4)), inside, atol=1e-5)
    assert coords.width("emb", (6, 4)) == 12 and coords.width("bias", (6, 1)) == 6  # narrow tables go whole


def test_clipped_counts_past_a_small_ring_add_up_exactly():
    """A 16-bit ring for 200 clients has 326 levels; 10,000 clipped entries a
    client still add up exactly (the count travels as digits of that base)."""
    shapes = {"emb": (2500, 4)}
    ring, layout, rng = Ring(16, 0.1, 200), Layout(shapes, EveryCoordinate()), np.random.default_rng(2)
    total = np.zeros(layout.length(ring), np.uint64)
    for _ in range(200):
        vector, _ = layout.encode({"emb": np.ones((2500, 4), np.float32)}, ring, rng)
        total = ring.add(total, vector)
    step, clipped = layout.decode(total, 200, ring, row_averaging=False)
    assert clipped == 200 * 10_000
    np.testing.assert_allclose(step["emb"], 0.1, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(bits=st.sampled_from([16, 24, 32]), clients=st.integers(1, 2000), most=st.integers(0, 10**7),
       data=st.data())
def test_digits_of_counts_sum_without_wrapping(bits, clients, most, data):
    ring = Ring(bits, 1.0, clients)
    counts = data.draw(st.lists(st.integers(0, most), min_size=1, max_size=clients))
    total = np.zeros(ring.digit_count(most), np.uint64)
    for count in counts:
        digits = ring.digits(count, most)
        assert len(digits) == ring.digit_count(most) and (digits <= ring.levels).all()
        total = ring.add(total, digits)
    assert ring.undigits(total) == sum(counts)
