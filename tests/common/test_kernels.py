"""The compiled Rice coder against the numpy coder it replaced (kept here as
the reference): the same bytes, the same indices, the same first error."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common import kernels
from prunus.common.codec_index import CodecError, _bitmap_bytes, gaps, pack_fields, unpack_fields

_U64 = np.uint64


def reference_encode(g: np.ndarray, k: int) -> bytes:
    low = pack_fields(g & _U64((1 << k) - 1), k)
    q = (g >> _U64(k)).astype(np.int64)
    pos = np.cumsum(q + 1) - 1
    return low + _bitmap_bytes(pos, int(pos[-1]) + 1)


def reference_decode(stream: np.ndarray, nnz: int, k: int, n: int) -> np.ndarray:
    nlow = (nnz * k + 7) // 8
    low = unpack_fields(stream[:nlow], nnz, k)
    unary = stream[nlow:]
    ones = np.flatnonzero(np.unpackbits(unary, bitorder="little"))
    if len(ones) != nnz:
        raise CodecError("Rice unary part does not hold nnz codes")
    if ones[-1] < 8 * (len(unary) - 1):
        raise CodecError("Rice unary part has trailing zero bytes")
    q = np.diff(ones, prepend=-1) - 1
    if int(q.max()) > ((n - 1) >> k):
        raise CodecError("Rice gap out of range")
    g = (q.astype(np.uint64) << _U64(k)) | low
    if int(g.max()) >= n:
        raise CodecError("index gap out of range")
    c = np.cumsum(g + _U64(1), dtype=np.uint64)
    if len(c) > 1 and not np.all(c[1:] > c[:-1]):
        raise CodecError("index gaps overflow")
    if int(c[-1]) > n:
        raise CodecError("index out of range")
    return (c - _U64(1)).astype(np.int64)


def _outcome(decoder, stream, nnz, k, n):
    try:
        return "ok", decoder(stream, nnz, k, n).tolist()
    except CodecError as err:
        return "error", str(err)


def compiled_decode(stream, nnz, k, n):
    idx, error = kernels.rice_decode(stream, nnz, k, n)
    if error:
        raise CodecError(kernels.RICE_ERRORS[error])
    return idx


@st.composite
def sparse_indices(draw):
    n = draw(st.integers(1, 5000))
    chosen = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, 300)))
    return np.array(sorted(chosen), dtype=np.int64), n


@settings(max_examples=300, deadline=None)
@given(sparse_indices(), st.integers(0, 14))
def test_encode_is_the_reference_stream_and_decodes_back(case, k):
    idx, n = case
    g = gaps(idx)
    stream = kernels.rice_encode(g.view(np.int64), k)
    assert stream.tobytes() == reference_encode(g, k)
    assert kernels.rice_sum(g.view(np.int64), k) == int((g >> _U64(k)).sum())
    assert compiled_decode(stream, len(idx), k, n).tolist() == idx.tolist()


@settings(max_examples=500, deadline=None)
@given(sparse_indices(), st.integers(0, 14), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                      min_size=1, max_size=4),
       st.integers(-3, 3))
def test_a_damaged_stream_gives_the_reference_outcome(case, k, edits, grow):
    idx, n = case
    stream = bytearray(reference_encode(gaps(idx), k))
    for where, byte in edits:
        stream[where % len(stream)] = byte
    stream = stream + bytes(max(grow, 0)) if grow >= 0 else stream[:max(1, len(stream) + grow)]
    nnz = len(idx)
    buf = np.frombuffer(bytes(stream), dtype=np.uint8)
    if len(buf) < (nnz * k + 7) // 8 + (nnz + 7) // 8:  # shorter than any legal stream: refused before decoding
        return
    assert _outcome(compiled_decode, buf, nnz, k, n) == _outcome(reference_decode, buf, nnz, k, n)


def test_gaps_that_wrap_around_are_an_overflow():
    n = 2**62
    g = np.array([n - 1, n - 1, n - 1, n - 1, n - 1], dtype=np.int64)  # sums past 2^64
    stream = kernels.rice_encode(g, 62)
    assert _outcome(compiled_decode, stream, 5, 62, n) == ("error", "index gaps overflow")
    assert _outcome(reference_decode, stream, 5, 62, n) == ("error", "index gaps overflow")


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.floats(1e-4, 100.0), st.integers(0, 2**32 - 1))
def test_the_residual_is_added_as_numpy_adds_it(size, lr, seed):
    rng = np.random.default_rng(seed)
    a, b = ((rng.standard_normal(size) * 10.0 ** rng.integers(-8, 8, size)).astype(np.float32) for _ in range(2))
    want = np.multiply(a, lr, dtype=np.float32)
    want += b
    got = kernels.scaled_add(a, np.float32(lr), b)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
