"""Index streams of the sparse wire format (see :mod:`common.codec`).

Every codec maps strictly increasing int64 indices in ``[0, n)`` to a byte
stream and back, vectorised in numpy (loops only run over bit/byte
*positions*, never over elements); Rice, the codec a top-k update's indices
take, is coded by compiled loops (`common.kernels`), one pass each way.
Bit order is little-endian throughout: bit ``i`` of a stream is bit
``i % 8`` of byte ``i // 8``.

Gap-based codecs code ``g_0 = idx_0`` and ``g_i = idx_i - idx_{i-1} - 1``.

* ``bitmap`` (id 1): ``ceil(n/8)`` bytes, bit ``i`` set iff ``i`` is an index.
* ``delta-varint`` (id 2): the gaps as unsigned LEB128 varints, concatenated.
* ``rice`` (id 3, parameter ``k``): the ``k`` low bits of every gap packed
  (``ceil(nnz*k/8)`` bytes), then the quotients ``g >> k`` in unary
  (``q`` zero bits then a one bit), padded with zero bits to a whole byte.
* ``elias-fano`` (id 4, parameter ``l``): the ``l`` low bits of every index
  packed (``ceil(nnz*l/8)`` bytes), then the upper bitmap of
  ``U = nnz + ((n-1) >> l) + 1`` bits with bit ``(idx_i >> l) + i`` set,
  padded to ``ceil(U/8)`` bytes.

An empty tensor (nnz = 0) has an empty index stream for every codec.  The
encoder picks the size-optimal ``k`` / ``l`` (exact sizes, see
:func:`stream_size`); the decoder accepts any parameter in ``[0, 62]``.
"""

from __future__ import annotations

import math

import numpy as np

from prunus.common import kernels

INT64_MAX = 2**63 - 1
MAX_PARAM = 62

INDEX_CODECS = {"bitmap": 1, "delta-varint": 2, "rice": 3, "elias-fano": 4}
INDEX_CODEC_NAMES = {v: k for k, v in INDEX_CODECS.items()}
# Tie-break order for "auto" (cheapest to decode first).
_AUTO_ORDER = ("bitmap", "elias-fano", "rice", "delta-varint")
_U64 = np.uint64


class CodecError(ValueError):
    """Raised for every malformed, truncated or inconsistent payload."""


def _cdiv8(bits: int) -> int:
    return (bits + 7) >> 3


# --------------------------------------------------------------- bit fields
def pack_fields(vals: np.ndarray, width: int) -> bytes:
    """Pack the low ``width`` bits of each uint64 in ``vals`` (LSB first):
    the low bytes of all values unpacked to bits at once, ``width`` a value
    (one pass, not one per bit position)."""
    if width == 0 or len(vals) == 0:
        return b""
    octets = np.ascontiguousarray(vals, dtype="<u8").view(np.uint8).reshape(len(vals), 8)
    bits = np.unpackbits(octets[:, : (width + 7) // 8], axis=1, count=width, bitorder="little")
    return np.packbits(bits.ravel(), bitorder="little").tobytes()


def unpack_fields(buf: np.ndarray, count: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_fields`; padding bits must be zero. Each
    value is its row of bits times the powers of two (one integer product)."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    bits = np.unpackbits(buf, bitorder="little")
    if bits[count * width:].any():
        raise CodecError("non-zero padding bits in packed low bits")
    powers = _U64(1) << np.arange(width, dtype=np.uint64)
    return bits[: count * width].reshape(count, width).astype(np.uint64) @ powers


def _bitmap_bytes(positions: np.ndarray, nbits: int) -> bytes:
    bits = np.zeros(_cdiv8(nbits) * 8, dtype=bool)
    bits[positions] = True
    return np.packbits(bits, bitorder="little").tobytes()


# -------------------------------------------------------------------- sizes
def gaps(idx: np.ndarray) -> np.ndarray:
    """uint64 gaps of sorted unique int64 indices (``g_i = d_i - 1``)."""
    g = np.empty(len(idx), dtype=np.int64)
    if len(idx):
        g[0] = idx[0]
        np.subtract(idx[1:], idx[:-1], out=g[1:])
        g[1:] -= 1
    return g.view(np.uint64)


def _varint_lengths(g: np.ndarray) -> np.ndarray:
    nb = np.ones(len(g), dtype=np.int64)
    if len(g):
        top = int(g.max()).bit_length()
        for j in range(1, max(1, (top + 6) // 7)):
            nb += g >= _U64(1 << (7 * j))
    return nb


def _rice_size(nnz: int, g: np.ndarray, k: int) -> int:
    return _cdiv8(nnz * k) + _cdiv8(nnz + kernels.rice_sum(g.view(np.int64), k))


def _ef_size(nnz: int, n: int, l: int) -> int:
    return _cdiv8(nnz * l) + _cdiv8(nnz + ((n - 1) >> l) + 1)


def best_rice_param(idx: np.ndarray, g: np.ndarray, n: int) -> tuple[int, int]:
    """(k, stream size): k from k0 = floor(log2(mean_gap * ln 2)), refined by
    the exact stream size over k0-1 .. k0+2."""
    nnz = len(idx)
    mean_gap = (int(idx[-1]) + 1) / nnz
    x = mean_gap * math.log(2)
    k0 = max(0, math.floor(math.log2(x))) if x >= 1 else 0
    cands = [k for k in range(k0 - 1, k0 + 3) if 0 <= k <= MAX_PARAM]
    return min(((k, _rice_size(nnz, g, k)) for k in cands), key=lambda t: t[1])


def best_ef_param(nnz: int, n: int) -> tuple[int, int]:
    """(l, stream size) minimising the exact Elias-Fano stream size. Past
    l = bit_length(n - 1) the upper bitmap is one bit per index and only the
    low bits grow, so the search stops there (the same l as a search to 62)."""
    top = min(MAX_PARAM, max(0, n - 1).bit_length())
    l = np.arange(top + 1, dtype=np.int64)  # every candidate at once (a search of 10-20 per tensor)
    sizes = (nnz * l + 7) // 8 + (nnz + (np.int64(n - 1) >> l) + 8) // 8
    best = int(np.argmin(sizes))  # the first minimum: ties to the smaller l
    return best, int(sizes[best])


def stream_size(codec: str, idx: np.ndarray, n: int,
                g: np.ndarray | None = None) -> tuple[int, int]:
    """Exact (param, index-stream bytes) of ``codec`` for sorted ``idx``."""
    nnz = len(idx)
    if nnz == 0:
        return 0, 0
    if codec == "bitmap":
        return 0, _cdiv8(n)
    if codec == "elias-fano":
        return best_ef_param(nnz, n)
    g = gaps(idx) if g is None else g
    if codec == "delta-varint":
        return 0, int(_varint_lengths(g).sum())
    if codec == "rice":
        return best_rice_param(idx, g, n)
    raise ValueError(f"unknown index codec {codec!r}")


def choose_auto(idx: np.ndarray, n: int, g: np.ndarray | None = None) -> tuple[str, int]:
    """(codec, its parameter) giving the smallest stream (ties: cheapest
    decode); ``g``: the gaps of ``idx``, if the caller has them."""
    g = gaps(idx) if g is None and len(idx) else g
    sizes = {c: stream_size(c, idx, n, g) for c in _AUTO_ORDER if c != "delta-varint"}
    if min(size for _, size in sizes.values()) > len(idx):  # a varint takes a byte at least
        sizes["delta-varint"] = stream_size("delta-varint", idx, n, g)
    codec = min(sizes, key=lambda c: (sizes[c][1], _AUTO_ORDER.index(c)))
    return codec, sizes[codec][0]


# ------------------------------------------------------------------- encode
def encode_indices(codec: str, idx: np.ndarray, n: int, param: int | None = None,
                   g: np.ndarray | None = None) -> tuple[int, bytes]:
    """(param, stream) for sorted unique int64 ``idx`` in ``[0, n)``; the
    size-optimal parameter unless ``param`` (from :func:`choose_auto`) is
    given; ``g``: the gaps of ``idx``, if the caller has them."""
    nnz = len(idx)
    if nnz == 0:
        return 0, b""
    if codec == "bitmap":
        return 0, _bitmap_bytes(idx, n)
    if codec == "elias-fano":
        l = best_ef_param(nnz, n)[0] if param is None else param
        ui = idx.astype(np.uint64)
        low = pack_fields(ui & _U64((1 << l) - 1), l)
        pos = (ui >> _U64(l)).astype(np.int64) + np.arange(nnz, dtype=np.int64)
        return l, low + _bitmap_bytes(pos, nnz + ((n - 1) >> l) + 1)
    g = gaps(idx) if g is None else g
    if codec == "delta-varint":
        return 0, _varint_encode(g)
    if codec == "rice":
        k = best_rice_param(idx, g, n)[0] if param is None else param
        return k, kernels.rice_encode(g.view(np.int64), k).tobytes()
    raise ValueError(f"unknown index codec {codec!r}")


def _varint_encode(g: np.ndarray) -> bytes:
    nb = _varint_lengths(g)
    starts = np.cumsum(nb) - nb
    out = np.empty(int(nb.sum()), dtype=np.uint8)
    sel = np.arange(len(g))
    for j in range(int(nb.max())):
        if j:
            sel = sel[nb[sel] > j]
        chunk = (g[sel] >> _U64(7 * j)) & _U64(0x7F)
        chunk |= (nb[sel] > j + 1).astype(np.uint64) << _U64(7)
        out[starts[sel] + j] = chunk
    return out.tobytes()


# ------------------------------------------------------------------- decode
def expected_stream_bounds(code: int, param: int, n: int, nnz: int) -> tuple[int, int]:
    """Inclusive (min, max) legal index-stream length; pure integer maths."""
    if nnz == 0:
        return 0, 0
    if code == 1:
        s = _cdiv8(n)
        return s, s
    if code == 2:
        return nnz, 9 * nnz
    if code == 3:
        lo = _cdiv8(nnz * param) + _cdiv8(nnz)
        # sum(g >> k) <= (sum g) >> k <= (n - nnz) >> k
        return lo, _cdiv8(nnz * param) + _cdiv8(nnz + ((n - nnz) >> param))
    s = _ef_size(nnz, n, param)
    return s, s


def decode_indices(code: int, param: int, stream: np.ndarray, n: int,
                   nnz: int) -> np.ndarray:
    """Decode and fully validate an index stream whose length was already
    checked against :func:`expected_stream_bounds`; returns int64 indices."""
    if nnz == 0:
        return np.zeros(0, dtype=np.int64)
    if code == 1:
        bits = np.unpackbits(stream, bitorder="little")
        if bits[n:].any():
            raise CodecError("bitmap padding bits are not zero")
        idx = np.flatnonzero(bits[:n])
        if len(idx) != nnz:
            raise CodecError(f"bitmap popcount {len(idx)} != nnz {nnz}")
        return idx.astype(np.int64, copy=False)
    if code == 4:
        nlow = _cdiv8(nnz * param)
        low = unpack_fields(stream[:nlow], nnz, param)
        ones = np.flatnonzero(np.unpackbits(stream[nlow:], bitorder="little"))
        if len(ones) != nnz:
            raise CodecError("Elias-Fano upper bitmap popcount != nnz")
        if ones[-1] >= nnz + ((n - 1) >> param) + 1:
            raise CodecError("Elias-Fano padding bits are not zero")
        high = (ones - np.arange(nnz)).astype(np.uint64)
        return _check_sorted((high << _U64(param)) | low, n)
    if code == 3:
        idx, error = kernels.rice_decode(stream, nnz, param, n)
        if error:
            raise CodecError(kernels.RICE_ERRORS[error])
        return idx
    return _gaps_to_indices(_varint_decode(stream, nnz), n)


def _varint_decode(b: np.ndarray, nnz: int) -> np.ndarray:
    term = np.flatnonzero(b < 0x80)
    if len(term) != nnz:
        raise CodecError(f"varint stream holds {len(term)} values, expected {nnz}")
    if term[-1] != len(b) - 1:
        raise CodecError("unterminated varint at end of index stream")
    starts = np.empty(nnz, dtype=np.int64)
    starts[0] = 0
    starts[1:] = term[:-1] + 1
    lens = term - starts + 1
    maxlen = int(lens.max())
    if maxlen > 9:
        raise CodecError("varint longer than 9 bytes")
    if maxlen > 1 and np.any((lens > 1) & (b[term] == 0)):
        raise CodecError("overlong varint")
    g = (b[starts] & 0x7F).astype(np.uint64)
    sel = np.arange(nnz)
    for j in range(1, maxlen):
        sel = sel[lens[sel] > j]
        g[sel] |= (b[starts[sel] + j] & 0x7F).astype(np.uint64) << _U64(7 * j)
    return g


def _gaps_to_indices(g: np.ndarray, n: int) -> np.ndarray:
    if int(g.max()) >= n:
        raise CodecError("index gap out of range")
    c = np.cumsum(g + _U64(1), dtype=np.uint64)  # each addend in [1, n]
    # a uint64 wrap-around would make the running sum decrease (it cannot
    # when the largest possible sum, len(g) * n, fits)
    if len(g) * n >= 2**64 and len(c) > 1 and not np.all(c[1:] > c[:-1]):
        raise CodecError("index gaps overflow")
    if int(c[-1]) > n:
        raise CodecError("index out of range")
    return (c - _U64(1)).astype(np.int64)


def _check_sorted(idx: np.ndarray, n: int) -> np.ndarray:
    if int(idx.max()) >= n:
        raise CodecError("index out of range")
    if len(idx) > 1 and not np.all(idx[1:] > idx[:-1]):
        raise CodecError("indices not strictly increasing")
    return idx.astype(np.int64)
