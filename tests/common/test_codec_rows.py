"""Row sets and row blocks (`common.codec_rows`): round trips within the stated
bounds, and every malformed payload is a `CodecError`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.codec_index import CodecError
from prunus.common.codec_rows import (
    BLOCK_BITS,
    decode_row_set,
    encode_row_set,
    max_row_error,
    pack_rows,
    quantise_rows,
    unpack_rows,
)


@st.composite
def row_sets(draw):
    n = draw(st.integers(1, 5000))
    ids = draw(st.sets(st.integers(0, n - 1), max_size=min(n, 300)))
    return np.array(sorted(ids), dtype=np.int64), n


@settings(max_examples=200, deadline=None)
@given(row_sets())
def test_a_row_set_round_trips(case):
    ids, n = case
    np.testing.assert_array_equal(decode_row_set(encode_row_set(ids, n), n), ids)


def test_a_row_set_must_be_sorted_unique_and_in_range():
    for bad in ([3, 1], [1, 1], [-1], [10]):
        with pytest.raises(ValueError):
            encode_row_set(np.array(bad), 10)


def test_a_row_set_over_another_catalogue_is_refused():
    with pytest.raises(CodecError, match="expected 11"):
        decode_row_set(encode_row_set(np.array([1, 2]), 10), 11)


def _mutations(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    raw = np.frombuffer(data, dtype=np.uint8)
    cases = [data[:k] for k in range(0, len(data), max(1, len(data) // 20))] + [data + b"\0", data * 2]
    for _ in range(count):
        flipped = raw.copy()
        flipped[rng.integers(len(raw))] ^= np.uint8(1 << rng.integers(8))
        cases.append(flipped.tobytes())
    return cases


def test_a_mutated_row_set_decodes_to_a_valid_set_or_is_a_codec_error():
    rng = np.random.default_rng(0)
    data = encode_row_set(np.sort(rng.choice(3706, 600, replace=False)), 3706)
    for case in _mutations(data, rng, 2000):
        try:
            ids = decode_row_set(case, 3706)
        except CodecError:
            continue
        assert (np.diff(ids) > 0).all() and (len(ids) == 0 or 0 <= ids[0] <= ids[-1] < 3706)


@settings(max_examples=200, deadline=None)
@given(bits=st.sampled_from(BLOCK_BITS), rows=st.integers(1, 20), cols=st.integers(1, 40),
       scale=st.floats(1e-6, 1e3), stochastic=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_a_row_block_round_trips_within_its_bound(bits, rows, cols, scale, stochastic, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = 0.0
    noise = rng.random(x.shape) if stochastic else None
    scales, codes = quantise_rows(x, bits, noise)
    decoded = unpack_rows(pack_rows(scales, codes, bits), rows, cols, bits)
    assert decoded.dtype == np.float32 and decoded.shape == x.shape
    error = np.abs(decoded.astype(np.float64) - x).max(axis=1)
    assert (error <= max_row_error(x, bits, stochastic)).all()
    assert not decoded[x == 0].any()


def test_a_row_too_large_for_a_float16_scale_cannot_be_encoded():
    with pytest.raises(ValueError, match="scale range"):
        quantise_rows(np.array([[1e9, 0.0]], dtype=np.float32), 4)
    with pytest.raises(ValueError, match="not finite"):
        quantise_rows(np.array([[np.inf, 0.0]], dtype=np.float32), 4)


@pytest.mark.parametrize("bits", BLOCK_BITS)
def test_a_mutated_row_block_decodes_to_finite_values_or_is_a_codec_error(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((30, 7)).astype(np.float32)
    data = pack_rows(*quantise_rows(x, bits), bits)
    for case in _mutations(data, rng, 2000):
        try:
            decoded = unpack_rows(case, 30, 7, bits)
        except CodecError:
            continue
        assert np.isfinite(decoded).all() and decoded.shape == (30, 7)
    for shape in ((29, 7), (30, 8)):
        with pytest.raises(CodecError, match="expected"):
            unpack_rows(data, *shape, bits)
