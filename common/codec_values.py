"""Value streams of the sparse wire format (see :mod:`common.codec`).

Stream layouts (little-endian), with their exact lengths for ``nnz`` values:

* ``fp32`` (id 1): ``nnz`` float32 -- ``4*nnz`` bytes.  Exact.
* ``fp16`` (id 2): ``nnz`` float16 -- ``2*nnz`` bytes.
* ``int8`` (id 3): float32 ``scale`` then ``nnz`` int8 in ``[-127, 127]`` --
  ``4 + nnz`` bytes.
* ``ternary`` (id 4): float32 magnitude ``m`` then one sign bit per value
  (1 = negative, LSB first, zero padding) -- ``4 + ceil(nnz/8)`` bytes.

Error bounds (``|decoded - original|`` per value, ``M = max|v|``); they are
what :func:`max_abs_error` returns and what the tests check:

* ``fp32``: 0 for float16/float32 inputs; for other dtypes the float32
  rounding, ``<= 2^-24 |v|`` (normal) -- bound ``M*2^-24 + 2^-150``.
* ``fp16``: relative error ``<= 2^-11`` for ``|v| >= 2^-14`` (normal range),
  absolute ``<= 2^-25`` below it -- bound ``max(M*2^-11, 2^-25)``.  Values
  that round beyond the float16 range (``|v| >= 65520``) are rejected.
* ``int8``: symmetric per-tensor ``scale = M/127`` (stored as float32),
  ``q = round(v/scale)``; error ``<= scale/2`` up to float32 rounding of the
  scale and of ``q*scale`` -- bound ``M/254 + M*2^-22 + 2^-140``.
* ``ternary``: decoded values are ``sign(v) * m`` with ``m = mean|v|``
  (float32; zeros decode to ``+m``); the error is ``||v| - m|`` -- bound
  ``max(M - m, m - min|v|)`` (plus ``M*2^-50`` float64 slack).
"""

from __future__ import annotations

import numpy as np

from .codec_index import CodecError

VALUE_CODECS = {"fp32": 1, "fp16": 2, "int8": 3, "ternary": 4}
VALUE_CODEC_NAMES = {v: k for k, v in VALUE_CODECS.items()}
_F32_MAX = float(np.finfo(np.float32).max)


def value_limit(value_codec: str) -> float:
    """The largest magnitude `value_codec` carries (a downlink clips its model to it)."""
    return float(np.finfo(np.float16).max) if value_codec == "fp16" else _F32_MAX


def value_stream_size(code: int, nnz: int) -> int:
    """Exact value-stream length (bytes) for codec id ``code``."""
    return {1: 4 * nnz, 2: 2 * nnz, 3: 4 + nnz, 4: 4 + (nnz + 7) // 8}[code]


def _ternary_magnitude(v: np.ndarray) -> np.float32:
    return np.float32(np.abs(v, dtype=np.float64).mean()) if len(v) else np.float32(0)


def max_abs_error(values, value_codec: str) -> float:
    """Upper bound on ``max |decoded - values|`` for ``value_codec``.

    See the module docstring for the per-codec derivation.  ``values`` is the
    1-D array passed to ``encode`` (any real dtype).
    """
    if value_codec not in VALUE_CODECS:
        raise ValueError(f"unknown value codec {value_codec!r}")
    v = np.asarray(values)
    if v.size == 0:
        return 0.0
    a = np.abs(v.astype(np.float64))
    big = float(a.max())
    if value_codec == "fp32":
        if v.dtype in (np.float16, np.float32):
            return 0.0
        return big * 2.0**-24 + 2.0**-150
    if value_codec == "fp16":
        return max(big * 2.0**-11, 2.0**-25)
    if value_codec == "int8":
        return big / 254 + big * 2.0**-22 + 2.0**-140
    m = float(_ternary_magnitude(v))
    return max(big - m, m - float(a.min())) + big * 2.0**-50


def encode_values(value_codec: str, v: np.ndarray) -> bytes:
    """Encode finite float32-range values (float32 or float64 array)."""
    if value_codec == "fp32":
        return v.astype("<f4").tobytes()
    if value_codec == "fp16":
        with np.errstate(over="ignore"):
            h = v.astype("<f2")
        if not np.isfinite(h).all():
            raise ValueError("values exceed the float16 range (|v| >= 65520); use fp32")
        return h.tobytes()
    if value_codec == "int8":
        scale, q = _int8_codes(v)
        return scale.astype("<f4").tobytes() + q.tobytes()
    if value_codec == "ternary":
        m = _ternary_magnitude(v)
        signs = np.packbits(v < 0, bitorder="little")
        return m.astype("<f4").tobytes() + signs.tobytes()
    raise ValueError(f"unknown value codec {value_codec!r}")


def _int8_codes(v: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """The int8 codec's scale (max |v| / 127) and codes of ``v``."""
    big = float(np.abs(v).max()) if len(v) else 0.0
    scale = np.float32(big / 127)
    if scale > 0:
        return scale, np.clip(np.rint(v.astype(np.float64) / float(scale)), -127, 127).astype(np.int8)
    return scale, np.zeros(len(v), dtype=np.int8)


def round_trip(value_codec: str, v: np.ndarray) -> np.ndarray:
    """``decode_values`` of ``encode_values(value_codec, v)``, as float32:
    what a receiver reads for ``v``; int8 without forming the stream (a
    client quantises its kept values every message)."""
    if value_codec != "int8":
        stream = np.frombuffer(encode_values(value_codec, v), dtype=np.uint8)
        return decode_values(VALUE_CODECS[value_codec], stream, len(v))
    scale, q = _int8_codes(v)
    out = _int8_values(q, scale)
    if not np.isfinite(out).all():
        raise CodecError("decoded values are not finite")
    return out


def _int8_values(q: np.ndarray, scale: np.float32) -> np.ndarray:
    """What the int8 codes `q` with their scale decode to (float32)."""
    with np.errstate(over="ignore"):
        return q.astype(np.float32) * scale


def decode_values(code: int, stream: np.ndarray, nnz: int) -> np.ndarray:
    """Decode a value stream of already-checked length into finite float32."""
    if code == 1:
        out = stream.view("<f4").astype(np.float32)
    elif code == 2:
        out = stream.view("<f2").astype(np.float32)
    else:
        param = float(stream[:4].view("<f4")[0])
        if not (np.isfinite(param) and param >= 0):
            raise CodecError("value scale/magnitude is negative or not finite")
        if code == 3:
            q = stream[4:].view(np.int8)
            if np.any(q == -128):
                raise CodecError("int8 value -128 is not a valid code")
            out = _int8_values(q, np.float32(param))
        else:
            bits = np.unpackbits(stream[4:], bitorder="little")
            if bits[nnz:].any():
                raise CodecError("ternary sign padding bits are not zero")
            m = np.float32(param)
            out = np.where(bits[:nnz].astype(bool), -m, m).astype(np.float32)
    if not np.isfinite(out).all():
        raise CodecError("decoded values are not finite")
    return out
