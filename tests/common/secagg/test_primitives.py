"""The pieces of secure aggregation: the ring, Shamir sharing, sealing, the PRG, the graph."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.secagg import keys, prg, shamir
from prunus.common.secagg.graph import neighbours
from prunus.common.secagg.ring import Ring


@settings(deadline=None)  # a loaded machine takes longer than the default 200 ms now and then
@given(st.sampled_from([12, 13, 16, 20, 24, 32, 40, 48, 56]), st.lists(st.integers(0, 2**56 - 1), max_size=20))
def test_ring_elements_travel_in_as_many_bits_as_the_ring_needs(bits, values):
    ring = Ring(bits, 1.0, 4)
    elements = ring.elements(np.array(values, np.uint64) & np.uint64(ring.mask))
    data = ring.to_bytes(elements)
    assert len(data) == -(-len(values) * bits // 8) == ring.byte_count(len(values))
    np.testing.assert_array_equal(ring.from_bytes(data, len(values)), elements)
    with pytest.raises(ValueError, match="bytes for"):
        ring.from_bytes(data + b"x", len(values))


def test_a_packed_input_whose_padding_is_not_zero_is_refused():
    ring = Ring(12, 1.0, 4)
    data = bytearray(ring.to_bytes(ring.elements(np.arange(3))))  # 36 bits: 4 of padding in the last byte
    data[-1] |= 0x80
    with pytest.raises(ValueError, match="padding"):
        ring.from_bytes(bytes(data), 3)


@pytest.mark.parametrize("bits", [8, 11, 57])
def test_a_ring_outside_12_to_56_bits_is_refused(bits):
    with pytest.raises(ValueError, match="from 12 to 56"):
        Ring(bits, 1.0, 2)


def test_the_ring_sum_of_clipped_stochastic_levels_decodes_to_the_mean_unbiased():
    ring = Ring(32, clip=0.5, max_clients=100)
    rng = np.random.default_rng(0)
    values = rng.uniform(-0.4, 0.4, size=(100, 2000))
    levels, clipped = zip(*(ring.encode(v, rng) for v in values))
    assert sum(clipped) == 0 and all(lv.max() <= ring.levels for lv in levels)
    total = np.zeros(2000, np.uint64)
    for lv in levels:
        total = ring.add(total, lv)
    decoded = ring.decode_sum(total, 100)
    assert np.abs(decoded - values.sum(axis=0)).max() < 100 * 1e-6  # each rounding moves a value < 1 level
    assert abs((decoded - values.sum(axis=0)).mean()) < 1e-7  # and is unbiased


def test_values_beyond_the_clip_are_clipped_and_counted_and_non_finite_refused():
    ring = Ring(16, clip=1.0, max_clients=2)
    levels, clipped = ring.encode(np.array([5.0, -5.0, 0.5]), np.random.default_rng(0))
    assert clipped == 2 and levels[0] == ring.levels and levels[1] == 0
    with pytest.raises(ValueError, match="non-finite"):
        ring.encode(np.array([np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="no room"):
        Ring(16, clip=1.0, max_clients=2**16)


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 5), st.integers(0, 4))
def test_any_threshold_of_shares_gives_the_secret_back(secret, threshold, extra):
    xs = list(range(1, threshold + extra + 1))
    shares = shamir.share(secret, threshold, xs)
    for chosen in itertools.islice(itertools.combinations(xs, threshold), 5):
        assert shamir.combine({x: shares[x] for x in chosen}, threshold) == secret
    if threshold > 1:
        with pytest.raises(ValueError, match="needed"):
            shamir.combine({x: shares[x] for x in xs[: threshold - 1]}, threshold)


def test_sealed_shares_open_only_for_their_recipient_and_context():
    a, b, c = keys.new_private(), keys.new_private(), keys.new_private()
    key_ab = keys.agree(a, keys.public_of(b), b"seal")
    assert key_ab == keys.agree(b, keys.public_of(a), b"seal") != keys.agree(a, keys.public_of(b), b"mask")
    sealed = keys.seal(key_ab, b"share", b"round 1 from 1 to 2")
    assert keys.open_sealed(key_ab, sealed, b"round 1 from 1 to 2") == b"share"
    for key, context in ((key_ab, b"round 2 from 1 to 2"), (keys.agree(a, keys.public_of(c), b"seal"), b"round 1 from 1 to 2")):
        with pytest.raises(ValueError, match="does not open"):
            keys.open_sealed(key, sealed, context)
    with pytest.raises(ValueError, match="unusable public key"):
        keys.agree(a, bytes(32), b"seal")  # the all-zero point


@pytest.mark.parametrize(("bits", "dtype"), [(12, np.uint16), (16, np.uint16), (24, np.uint32), (32, np.uint32),
                                             (40, np.uint64)])
def test_masks_are_the_same_from_the_same_seed_and_fill_the_ring(bits, dtype):
    seed, ring = bytes(range(32)), Ring(bits, 1.0, 4)
    a, b = prg.expand(seed, 1000, ring), prg.expand(seed, 1000, ring)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == dtype and a.max() < 2**bits and a.max() > 2 ** (bits - 1)
    assert not np.array_equal(a, prg.expand(bytes(32), 1000, ring))


@pytest.mark.parametrize("bits", [12, 16, 20, 24, 32, 48])
def test_ring_elements_travel_in_bits_over_8_bytes_and_add_modulo_2_to_the_bits(bits):
    ring, rng = Ring(bits, 1.0, 4), np.random.default_rng(bits)
    a = ring.elements(rng.integers(0, 2**bits, 500, dtype=np.uint64))
    b = ring.elements(rng.integers(0, 2**bits, 500, dtype=np.uint64))
    data = ring.to_bytes(a)
    assert len(data) == -(-500 * bits // 8)
    np.testing.assert_array_equal(ring.from_bytes(data, 500), a)
    expected = (a.astype(object) + b.astype(object)) % 2**bits
    np.testing.assert_array_equal(ring.add(a, b).astype(object), expected)
    np.testing.assert_array_equal(ring.sub(ring.add(a, b), b), a)


def test_the_neighbour_graph_is_symmetric_sparse_and_the_same_for_everyone():
    clients = list(range(0, 600, 3))
    graph = neighbours(clients, 10, seed=4, server_round=2)
    assert graph == neighbours(clients, 10, seed=4, server_round=2) != neighbours(clients, 10, seed=4, server_round=3)
    assert all(len(peers) == 10 and c not in peers for c, peers in graph.items())
    assert all(c in graph[p] for c, peers in graph.items() for p in peers)
    assert neighbours([1, 2, 3], 10, 0, 1) == {1: [2, 3], 2: [1, 3], 3: [1, 2]}
