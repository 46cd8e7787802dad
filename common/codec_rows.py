"""Row-structured wire formats: a set of row ids, and per-row quantised blocks.

A partial broadcast moves item rows: the client names the rows it needs (a
*row set*), the server sends those rows' values (a *row block* per tensor,
in the order of the set, so no index travels with them).

Row set (all integers little-endian)::

    0   4   magic b"PRRS"
    4   1   version (1)
    5   1   index codec id (`common.codec_index`; the smallest for the set)
    6   1   index codec parameter
    7   8   n   (uint64: ids lie in [0, n))
    15  8   count (uint64)
    23  ... index stream; nothing after it

Row block of a (rows, cols) float32 array at `bits` in {2, 4, 8}: one
float16 scale per row, then one code per entry, ``q + Q`` for
``q in [-Q, Q]``, ``Q = 2^(bits-1) - 1`` (the top code ``2^bits - 1`` is
invalid), packed LSB first with zero padding bits::

    0   4   magic b"PRRQ"
    4   1   version (1)
    5   1   bits
    6   4   rows (uint32)
    10  4   cols (uint32)
    14  2*rows                 scales (float16, finite, >= 0)
    ..  ceil(rows*cols*bits/8) codes; nothing after them

Each row's scale is ``max|row| / Q`` rounded *up* to float16, so no value
clips. With noise ``u`` uniform in [0, 1) a value rounds stochastically,
``q = floor(v/scale + u)`` (unbiased, error below one scale step); without,
to the nearest step (error at most half a step). `max_row_error` is the
bound the tests check. Decoders trust nothing: every malformed payload raises
`CodecError`, with lengths checked before anything is allocated.
"""

from __future__ import annotations

import struct

import numpy as np

from .codec_index import (
    INDEX_CODECS,
    MAX_PARAM,
    CodecError,
    choose_auto,
    decode_indices,
    encode_indices,
    expected_stream_bounds,
)

BLOCK_BITS = (2, 4, 8)
BLOCK_MAGIC = b"PRRQ"
_SET = struct.Struct("<4sBBBQQ")
_BLOCK = struct.Struct("<4sBBII")
_F16_MAX = float(np.finfo(np.float16).max)


# ----------------------------------------------------------------- row sets
def encode_row_set(ids: np.ndarray, n: int) -> bytes:
    """Sorted unique int ids in [0, n) -> bytes."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) and (ids[0] < 0 or ids[-1] >= n or np.any(np.diff(ids) <= 0)):
        raise ValueError(f"row ids must be sorted, unique and in [0, {n})")
    codec, param = choose_auto(ids, n) if len(ids) else ("bitmap", 0)
    param, stream = encode_indices(codec, ids, n, param)
    return _SET.pack(b"PRRS", 1, INDEX_CODECS[codec], param, n, len(ids)) + stream


def decode_row_set(data: bytes, n: int) -> np.ndarray:
    """Bytes -> the sorted unique ids, checked to lie in [0, n)."""
    if len(data) < _SET.size:
        raise CodecError(f"row set of {len(data)} bytes is shorter than its header")
    magic, version, code, param, claimed_n, count = _SET.unpack_from(data)
    if magic != b"PRRS" or version != 1:
        raise CodecError("not a row set (bad magic or version)")
    if claimed_n != n:
        raise CodecError(f"row set over {claimed_n} rows, expected {n}")
    if code not in INDEX_CODECS.values() or count > n or param > MAX_PARAM or (code in (1, 2) and param):
        raise CodecError(f"row set: index codec {code}, parameter {param} or count {count} out of range")
    lo, hi = expected_stream_bounds(code, param, n, count)
    stream = np.frombuffer(data, dtype=np.uint8, offset=_SET.size)
    if not lo <= len(stream) <= hi:
        raise CodecError(f"row set: index stream of {len(stream)} bytes, expected {lo}..{hi}")
    return decode_indices(code, param, stream, n, count)


# --------------------------------------------------------------- row blocks
def levels(bits: int) -> int:
    """Q: codes run over [-Q, Q]."""
    if bits not in BLOCK_BITS:
        raise ValueError(f"row blocks have {BLOCK_BITS} bits, not {bits}")
    return 2 ** (bits - 1) - 1


def row_limit(bits: int) -> float:
    """The largest magnitude a `bits`-bit row block carries: Q steps of the
    largest float16 scale (a downlink clips its model to it before quantising)."""
    return _F16_MAX * levels(bits)


def check_scales(scales: np.ndarray) -> np.ndarray:
    """Row scales read from a payload: CodecError unless finite and >= 0."""
    if not (np.isfinite(scales).all() and (scales >= 0).all()):
        raise CodecError("row block scales are negative or not finite")
    return scales


def as_rows(x: np.ndarray) -> np.ndarray:
    """The 2-D view a tensor is quantised in: (shape[0], rest); a 1-D or 0-D tensor is one row."""
    return x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)


def quantise_rows(x: np.ndarray, bits: int, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float16 scale per row, uint8 code per entry) of a finite 2-D array.

    ValueError if a row's scale exceeds the float16 range (|v| > `row_limit(bits)`).
    """
    q = levels(bits)
    x = np.asarray(x, dtype=np.float32)
    big = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    if not np.isfinite(big).all() or (big / q > _F16_MAX).any():
        raise ValueError(f"row values are not finite or exceed the {bits}-bit row scale range (|v| > {_F16_MAX:g} x {q})")
    want = big.astype(np.float64) / q
    scales = want.astype(np.float16)
    low = scales.astype(np.float64) < want
    scales[low] = np.nextafter(scales[low], np.float16(np.inf))  # round up: nothing clips
    step = np.where(scales > 0, scales.astype(np.float64), 1.0)[:, None]
    scaled = x / step
    codes = np.floor(scaled + noise) if noise is not None else np.rint(scaled)
    return scales, (np.clip(codes, -q, q) + q).astype(np.uint8)


def dequantise_rows(scales: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    q = levels(bits)
    return ((codes.astype(np.float32) - q) * scales.astype(np.float32)[:, None]).astype(np.float32)


def max_row_error(x: np.ndarray, bits: int, stochastic: bool) -> np.ndarray:
    """Per-row bound on |decoded - x|: one scale step (stochastic) or half of one,
    the step being max|row|/Q rounded up to float16 (relative 2^-10 at most)."""
    x = np.asarray(x, dtype=np.float64)
    step = np.abs(x).max(axis=1) / levels(bits) * (1 + 2.0**-10) + 2.0**-24  # + float16's smallest step
    return step * (1.0 if stochastic else 0.5) * (1 + 2.0**-20)


def pack_rows(scales: np.ndarray, codes: np.ndarray, bits: int) -> bytes:
    """A row block's bytes from `quantise_rows`' output (or rows of it)."""
    rows, cols = codes.shape
    per = 8 // bits
    flat = codes.ravel()
    flat = np.concatenate([flat, np.zeros(-len(flat) % per, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    packed = np.bitwise_or.reduce(flat << shifts, axis=1).astype(np.uint8) if per > 1 else flat.ravel()
    return _BLOCK.pack(BLOCK_MAGIC, 1, bits, rows, cols) + scales.astype("<f2").tobytes() + packed.tobytes()


def block_header(data: bytes) -> tuple[int, int, int]:
    """(bits, rows, cols) a row block's header claims; CodecError unless it is a row block's header."""
    if len(data) < _BLOCK.size:
        raise CodecError(f"row block of {len(data)} bytes is shorter than its header")
    magic, version, bits, rows, cols = _BLOCK.unpack_from(data)
    if magic != BLOCK_MAGIC or version != 1:
        raise CodecError("not a row block (bad magic or version)")
    return bits, rows, cols


def block_size(rows: int, cols: int, bits: int) -> int:
    """The bytes of a `bits`-bit row block of (rows, cols): header, scales, codes."""
    return _BLOCK.size + 2 * rows + (rows * cols * bits + 7) // 8


def unpack_rows(data: bytes, rows: int, cols: int, bits: int) -> np.ndarray:
    """A row block's bytes -> (rows, cols) float32; CodecError unless the block
    is exactly a `bits`-bit block of that shape with valid scales and codes."""
    got_bits, got_rows, got_cols = block_header(data)
    if (got_bits, got_rows, got_cols) != (bits, rows, cols):
        raise CodecError(f"row block of {got_rows}x{got_cols} at {got_bits} bits, expected {rows}x{cols} at {bits}")
    n = rows * cols
    size = block_size(rows, cols, bits)
    if len(data) != size:
        raise CodecError(f"row block of {len(data)} bytes, expected {size}")
    scales = check_scales(np.frombuffer(data, dtype="<f2", count=rows, offset=_BLOCK.size))
    packed = np.frombuffer(data, dtype=np.uint8, offset=_BLOCK.size + 2 * rows)
    per, mask = 8 // bits, (1 << bits) - 1
    codes = ((packed[:, None] >> (np.arange(per, dtype=np.uint8) * bits)) & mask).ravel()
    if codes[n:].any():
        raise CodecError("row block padding bits are not zero")
    codes = codes[:n].reshape(rows, cols)
    if (codes > 2 * levels(bits)).any():
        raise CodecError(f"row block code {2 ** bits - 1} is not valid")
    return dequantise_rows(scales, codes, bits)
