"""Compiled loops of the top-k path, where numpy's per-call cost is the cost.

A top-k client keeps ~4,800 of 240,000 entries and codes their positions;
in numpy coding them is a dozen calls of ~5 us over a few thousand elements,
and adding the residual two passes over a model's worth. These loops
(numba, compiled once per machine and cached beside this file) do each in
one pass. Their results are defined by the numpy code they replace, bit for
bit: the residual added is the same float32 sums, the Rice streams are the
same bytes, and the decoder rejects what the numpy decoder rejected, with
the same first error (`RICE_ERRORS`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def scaled_add(a: np.ndarray, s: np.float32, b: np.ndarray) -> np.ndarray:
    """`a * s + b` of 1-D float32 arrays in one pass: bit for bit numpy's
    `np.multiply(a, s, dtype=np.float32)` then `+= b` (each product rounded
    to float32, then the sum; no fused multiply-add), without the product's
    array (an error-feedback residual is a model's worth)."""
    out = np.empty_like(b)
    for i in range(b.size):
        out[i] = a[i] * s + b[i]
    return out


@njit(cache=True, nogil=True)
def rice_sum(g: np.ndarray, k: int) -> int:
    """The sum of the Rice quotients `g >> k` of int64 gaps (>= 0)."""
    total = 0
    for v in g:
        total += v >> k
    return total


@njit(cache=True, nogil=True)
def rice_encode(g: np.ndarray, k: int) -> np.ndarray:
    """The Rice stream of int64 gaps (>= 0): the `k` low bits of every gap,
    then every quotient in unary (zeros, then a one), little-endian bits."""
    nnz = g.size
    low_bytes = (nnz * k + 7) >> 3
    out = np.zeros(low_bytes + ((nnz + rice_sum(g, k) + 7) >> 3), dtype=np.uint8)
    bit = 0
    if k:
        mask = (np.int64(1) << k) - 1
        for v in g:
            field, left = v & mask, k
            while left:
                at = bit & 7
                take = min(8 - at, left)
                out[bit >> 3] |= np.uint8((field & ((1 << take) - 1)) << at)
                field >>= take
                bit += take
                left -= take
    bit = low_bytes * 8
    for v in g:
        bit += v >> k
        out[bit >> 3] |= np.uint8(1 << (bit & 7))
        bit += 1
    return out


# the decoder's errors, in the order the numpy decoder checked them
RICE_ERRORS = (
    "",
    "non-zero padding bits in packed low bits",
    "Rice unary part does not hold nnz codes",
    "Rice unary part has trailing zero bytes",
    "Rice gap out of range",
    "index gap out of range",
    "index gaps overflow",
    "index out of range",
)


@njit(cache=True, nogil=True)
def rice_decode(stream: np.ndarray, nnz: int, k: int, n: int) -> tuple[np.ndarray, int]:
    """(int64 indices, 0) of a Rice stream of `nnz` gaps over `[0, n)`, or
    (partial, the index of its first error in `RICE_ERRORS`); the stream's
    length is already checked (`codec_index.expected_stream_bounds`)."""
    idx = np.zeros(nnz, dtype=np.int64)  # the low bits first, then the gaps, then the indices
    low_bytes = (nnz * k + 7) >> 3
    bit = 0
    if k:
        for i in range(nnz):
            field, got = np.int64(0), 0
            while got < k:
                at = bit & 7
                take = min(8 - at, k - got)
                field |= np.int64((stream[bit >> 3] >> at) & ((1 << take) - 1)) << got
                got += take
                bit += take
            idx[i] = field
    for b in range(bit, low_bytes * 8):
        if (stream[b >> 3] >> (b & 7)) & 1:
            return idx, 1
    # the quotients, in one pass: every one bit ends a code; a stream of too
    # many or too few codes is that error, whatever else is wrong with it
    q_max, g_max, bad_q = (n - 1) >> k, 0, False
    ones, previous = 0, low_bytes * 8 - 1
    for b in range(low_bytes, stream.size):
        byte = np.int64(stream[b])
        while byte:
            low = byte & -byte
            position = b * 8 + _bit_of(low)
            byte ^= low
            if ones < nnz:
                q = position - previous - 1
                if q > q_max:
                    bad_q = True
                else:
                    gap = (np.int64(q) << k) | idx[ones]
                    idx[ones] = gap
                    g_max = max(g_max, gap)
            previous = position
            ones += 1
    if ones != nnz:
        return idx, 2
    if previous < 8 * (stream.size - 1):
        return idx, 3
    if bad_q:
        return idx, 4
    if g_max >= n:
        return idx, 5
    total = np.uint64(0)
    for i in range(nnz):
        step = total + np.uint64(idx[i]) + np.uint64(1)
        if step < total:  # wrapped: possible only where nnz * n >= 2^64
            return idx, 6
        total = step
        idx[i] = np.int64(total) - 1
    if total > np.uint64(n):
        return idx, 7
    return idx, 0


@njit(cache=True, nogil=True)
def _bit_of(single: int) -> int:
    """The position of the one set bit of a byte."""
    position = 0
    while single > 1:
        single >>= 1
        position += 1
    return position
