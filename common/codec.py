"""Wire format for pruned (sparse) model updates.

One sparse tensor = flat int64 indices into the row-major tensor + values +
shape.  :func:`encode` turns it into bytes, :func:`decode` back; no pickle.
:func:`pack_update` / :func:`unpack_update` move a whole update (tensor name
-> sparse tensor) through ``Arrays`` (``common.payload``), each payload stored as a
1-D uint8 npy array.

Payload layout (all integers little-endian)::

    offset  size     field
    0       4        magic  b"PRSP"
    4       1        format version (1)
    5       1        index codec id  (1 bitmap, 2 delta-varint, 3 rice,
                                      4 elias-fano)
    6       1        value codec id  (1 fp32, 2 fp16, 3 int8, 4 ternary)
    7       1        index codec parameter (Rice k / Elias-Fano l; else 0)
    8       1        ndim (0..64)
    9       8*ndim   dims, uint64 each (>= 1, product n < 2^63)
    9+8*ndim  8      nnz  (uint64, <= n)
    17+8*ndim 8      index stream length in bytes (uint64)
    25+8*ndim 8      value stream length in bytes (uint64)
    33+8*ndim ...    index stream, then value stream; nothing after them.

Index streams are documented in :mod:`common.codec_index`, value streams
(and the error bound of every lossy value codec) in :mod:`common.codec_values`.

:func:`decode` trusts nothing: every malformed, truncated, inconsistent or
non-canonical payload raises :class:`CodecError` (a ``ValueError``) and no
other exception type.  All lengths are checked against the actual payload
size with Python integers *before* anything is allocated, so the memory a
decode uses is bounded by a small multiple of ``len(data)``.
"""

from __future__ import annotations

import math
import operator
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from prunus.common.payload import NPY_STYPE, NpyArray

from .codec_index import (
    INDEX_CODEC_NAMES,
    INDEX_CODECS,
    INT64_MAX,
    MAX_PARAM,
    CodecError,
    choose_auto,
    decode_indices,
    encode_indices,
    expected_stream_bounds,
    gaps,
)
from .codec_values import (
    VALUE_CODEC_NAMES,
    VALUE_CODECS,
    decode_values,
    encode_values,
    max_abs_error,
    value_stream_size,
)
from .update import Sparse

__all__ = [
    "CodecError", "INDEX_CODECS", "VALUE_CODECS", "PayloadInfo", "encode",
    "decode", "read_header", "max_abs_error", "pack_update", "unpack_update",
    "payload_nbytes", "record_payload",
]

MAGIC = b"PRSP"
VERSION = 1
MAX_NDIM = 64
_FIXED = struct.Struct("<4sBBBBB")
_TAIL = struct.Struct("<QQQ")
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class PayloadInfo:
    """Validated header of one payload (see :func:`read_header`)."""

    index_codec: str
    value_codec: str
    index_param: int
    shape: tuple[int, ...]
    nnz: int
    header_nbytes: int
    index_nbytes: int
    value_nbytes: int


# ------------------------------------------------------------------ encode
def _check_shape(shape: Any) -> tuple[tuple[int, ...], int]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError as exc:
        raise ValueError(f"shape must be a sequence of ints, got {shape!r}") from exc
    if len(dims) > MAX_NDIM:
        raise ValueError(f"shape has {len(dims)} dims (max {MAX_NDIM})")
    if any(d < 1 for d in dims):
        raise ValueError(f"shape dims must be positive, got {dims}")
    n = math.prod(dims)
    if n > INT64_MAX:
        raise ValueError(f"shape {dims} has more than 2^63-1 entries")
    return dims, n


def _prepare(indices: Any, values: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(indices)
    val = np.asarray(values)
    if idx.ndim != 1 or val.ndim != 1:
        raise ValueError("indices and values must be 1-D arrays")
    if len(idx) != len(val):
        raise ValueError(f"mismatched lengths: {len(idx)} indices, {len(val)} values")
    if idx.size == 0:
        idx = idx.astype(np.int64)
    elif idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if val.size and val.dtype.kind not in "fiu":
        raise ValueError(f"values must be real numbers, got dtype {val.dtype}")
    increasing = len(idx) < 2 or bool(np.all(idx[1:] > idx[:-1]))
    if not increasing:
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
    if idx.size:  # sorted: the ends are the extremes
        lo, hi = int(idx[0]), int(idx[-1])
        if lo < 0 or hi >= n:
            raise ValueError(f"index out of range [0, {n}): min {lo}, max {hi}")
    idx = idx.astype(np.int64, copy=False)
    val = val.astype(np.float32 if val.dtype in (np.float16, np.float32) else np.float64, copy=False)
    big = float(np.abs(val).max()) if val.size else 0.0
    if not math.isfinite(big):  # a NaN or an infinity anywhere makes the largest one so
        raise ValueError("values must be finite (found NaN or inf)")
    if big > _F32_MAX:
        raise ValueError("values exceed the float32 range")
    if not increasing:
        dup = np.flatnonzero(idx[1:] == idx[:-1])
        if dup.size:
            raise ValueError(f"duplicate index {int(idx[dup[0]])}")
    return idx, val


def encode(indices: Any, values: Any, shape: Any, *, index_codec: str = "auto",
           value_codec: str = "fp32") -> bytes:
    """Encode one sparse tensor.

    ``indices``: 1-D integer array of unique flat (row-major) positions in
    ``[0, prod(shape))``, any order (sorted here, values alongside).
    ``values``: 1-D real array, finite and within float32 range.
    ``index_codec``: "bitmap", "delta-varint", "rice", "elias-fano" or
    "auto" (the smallest stream; exact sizes, ties -> cheapest decode).
    ``value_codec``: "fp32" (exact), "fp16", "int8", "ternary" (lossy; see
    :func:`max_abs_error`).  Raises ``ValueError`` naming the problem.
    """
    dims, n = _check_shape(shape)
    if index_codec != "auto" and index_codec not in INDEX_CODECS:
        raise ValueError(f"unknown index codec {index_codec!r}")
    if value_codec not in VALUE_CODECS:
        raise ValueError(f"unknown value codec {value_codec!r}")
    idx, val = _prepare(indices, values, n)
    g = gaps(idx) if index_codec == "auto" and len(idx) else None  # what auto sizes, the stream reuses
    codec, param = choose_auto(idx, n, g) if index_codec == "auto" else (index_codec, None)
    param, istream = encode_indices(codec, idx, n, param, g)
    vstream = encode_values(value_codec, val)
    head = _FIXED.pack(MAGIC, VERSION, INDEX_CODECS[codec], VALUE_CODECS[value_codec],
                       param, len(dims))
    return b"".join((head, struct.pack(f"<{len(dims)}Q", *dims),
                     _TAIL.pack(len(idx), len(istream), len(vstream)), istream, vstream))


# ------------------------------------------------------------------ decode
def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return data.tobytes()
    raise TypeError(f"expected a bytes-like payload, got {type(data).__name__}")


def _parse_header(buf: bytes) -> PayloadInfo:
    size = len(buf)
    if size < _FIXED.size:
        raise CodecError(f"payload truncated: {size} bytes is shorter than the header")
    magic, version, icode, vcode, param, ndim = _FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError(f"bad magic bytes {magic!r}")
    if version != VERSION:
        raise CodecError(f"unsupported format version {version}")
    if icode not in INDEX_CODEC_NAMES:
        raise CodecError(f"unknown index codec id {icode}")
    if vcode not in VALUE_CODEC_NAMES:
        raise CodecError(f"unknown value codec id {vcode}")
    if ndim > MAX_NDIM:
        raise CodecError(f"ndim {ndim} exceeds {MAX_NDIM}")
    hlen = _FIXED.size + 8 * ndim + _TAIL.size
    if size < hlen:
        raise CodecError(f"payload truncated: {size} bytes, header needs {hlen}")
    dims = struct.unpack_from(f"<{ndim}Q", buf, _FIXED.size)
    n = 1
    for d in dims:
        if d == 0:
            raise CodecError("zero-sized dimension")
        n *= d
        if n > INT64_MAX:
            raise CodecError("tensor size does not fit in int64")
    nnz, ilen, vlen = _TAIL.unpack_from(buf, hlen - _TAIL.size)
    if nnz > n:
        raise CodecError(f"nnz {nnz} exceeds tensor size {n}")
    if (icode in (1, 2) and param != 0) or param > MAX_PARAM:
        raise CodecError(f"invalid index codec parameter {param}")
    if hlen + ilen + vlen != size:
        raise CodecError(f"stream lengths ({ilen} + {vlen}) inconsistent with "
                         f"payload size {size} (header {hlen})")
    if vlen != value_stream_size(vcode, nnz):
        raise CodecError(f"value stream length {vlen} wrong for nnz {nnz}")
    lo, hi = expected_stream_bounds(icode, param, n, nnz)
    if not lo <= ilen <= hi:
        raise CodecError(f"index stream length {ilen} outside [{lo}, {hi}]")
    return PayloadInfo(INDEX_CODEC_NAMES[icode], VALUE_CODEC_NAMES[vcode], param,
                       tuple(dims), nnz, hlen, ilen, vlen)


_WRAPPED = (ValueError, IndexError, TypeError, KeyError, OverflowError,
            ZeroDivisionError, struct.error)


def read_header(data: bytes) -> PayloadInfo:
    """Parse and validate only the header (stream lengths included)."""
    buf = _as_bytes(data)
    try:
        return _parse_header(buf)
    except CodecError:
        raise
    except _WRAPPED as exc:  # defensive: explicit checks should pre-empt these
        raise CodecError(f"malformed header: {exc}") from exc


def decode(data: bytes) -> Sparse:
    """Decode one payload -> ``(indices int64, values float32, shape tuple)``.

    ``indices`` are strictly increasing.  Raises :class:`CodecError` (and
    nothing else) for any malformed payload; ``TypeError`` only when ``data``
    is not bytes-like at all.
    """
    buf = _as_bytes(data)
    try:
        info = _parse_header(buf)
        arr = np.frombuffer(buf, dtype=np.uint8)
        cut = info.header_nbytes + info.index_nbytes
        idx = decode_indices(INDEX_CODECS[info.index_codec], info.index_param,
                             arr[info.header_nbytes:cut], math.prod(info.shape), info.nnz)
        val = decode_values(VALUE_CODECS[info.value_codec], arr[cut:], info.nnz)
    except CodecError:
        raise
    except _WRAPPED as exc:  # defensive: explicit checks should pre-empt these
        raise CodecError(f"malformed payload: {exc}") from exc
    return Sparse(idx, val, info.shape)


# ------------------------------------------------------------ payloads
def pack_update(tensors: Mapping[str, tuple[Any, Any, Any]], *, index_codec: str = "auto",
                value_codec: str = "fp32"):
    """Encode every ``name -> (indices, values, shape)`` into ``Arrays`` of
    1-D uint8 npy payloads keyed by tensor name."""
    from .params import npy_array, record_of

    arrays = {}
    for name, (idx, val, shape) in tensors.items():
        try:
            data = encode(idx, val, shape, index_codec=index_codec, value_codec=value_codec)
        except ValueError as exc:
            raise ValueError(f"tensor {name!r}: {exc}") from exc
        arrays[name] = npy_array(np.frombuffer(data, dtype=np.uint8))
    return record_of(arrays)


def record_payload(name: str, arr: Any) -> bytes:
    from .params import array_of

    if not isinstance(arr, NpyArray) or arr.stype != NPY_STYPE \
            or arr.dtype != "uint8" or len(arr.shape) != 1:
        raise CodecError(f"tensor {name!r}: not a 1-D uint8 numpy array")
    try:
        raw = array_of(arr)
    except ValueError as exc:
        raise CodecError(f"tensor {name!r}: unreadable array data: {exc}") from exc
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CodecError(f"tensor {name!r}: array data is not 1-D uint8")
    return raw.tobytes()


def unpack_update(record, shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, Sparse]:
    """Inverse of :func:`pack_update`; raises :class:`CodecError` on bad data.

    With ``shapes`` the record must hold exactly those tensors, each payload's
    header naming its shape; both are checked before any stream is decoded,
    so a record of other tensors or sizes costs no decoding (a reader that
    decoded first would decode every extra tensor a record brings).
    """
    if shapes is not None and set(record) != set(shapes):
        missing, extra = sorted(set(shapes) - set(record)), sorted(set(record) - set(shapes))
        raise CodecError(f"tensors do not match the model: missing {missing[:10]}, unexpected {extra[:10]}")
    out = {}
    for name, arr in record.items():
        payload = record_payload(name, arr)
        try:
            if shapes is not None and read_header(payload).shape != tuple(shapes[name]):
                raise CodecError(f"expected shape {tuple(shapes[name])}, got {read_header(payload).shape}")
            out[name] = decode(payload)
        except CodecError as exc:
            raise CodecError(f"tensor {name!r}: {exc}") from exc
    return out


def payload_nbytes(record) -> int:
    """Total codec payload bytes in a packed record (without Flower framing)."""
    return sum(len(record_payload(k, a)) for k, a in record.items())
