"""Shared parameters as named numpy arrays, and their `Arrays` form (npy bytes, `common.payload`)."""

from __future__ import annotations

import functools
import io
import math
import re

import numpy as np

from prunus.common.payload import NPY_STYPE, Arrays, Content, NpyArray
from prunus.common.wire_size import wire_sizes

Params = dict[str, np.ndarray]


def to_record(params: Params) -> Arrays:
    """Pack named arrays into `Arrays` (npy bytes, as Flower's `Array` holds them)."""
    return record_of({name: npy_array(value) for name, value in params.items()})


def record_of(arrays: dict[str, NpyArray]) -> Arrays:
    """`Arrays` holding these arrays themselves (no copies)."""
    return Arrays(arrays)


def npy_array(value: np.ndarray) -> NpyArray:
    """`value` as npy bytes, byte for byte what `np.save` (and so Flower's
    `Array(value)`) writes, with the header cached per dtype and shape:
    `np.save` on a BytesIO costs five times as much, and a client builds a
    dozen of these per message."""
    if not (isinstance(value, np.ndarray) and value.ndim and value.flags.c_contiguous):
        value = np.ascontiguousarray(value)
    name, header = _npy_header_of(value.dtype, value.shape)
    data = b"".join((header, value.reshape(-1).view(np.uint8)))
    return NpyArray(name, value.shape, data)


@functools.lru_cache(maxsize=4096)
def _npy_header_of(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[str, bytes]:
    """The dtype's name and numpy's own npy 1.0 header of a C-ordered array
    (the shapes a run exchanges repeat: the model's tensors, a user's
    vectors, the payloads)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return str(dtype), buffer.getvalue()


class NonFiniteModel(ValueError):
    """A model (or a server optimiser's state) holding NaN or an infinity:
    nothing of it may be pruned, broadcast, evaluated or saved."""


def non_finite(params: Params) -> list[str]:
    """The names of the tensors that hold a NaN or an infinity, sorted."""
    return sorted(name for name, value in params.items() if not np.isfinite(value).all())


def check_finite(params: Params, what: str) -> Params:
    """`params`, or `NonFiniteModel` naming `what` and its non-finite tensors."""
    bad = non_finite(params)
    if bad:
        raise NonFiniteModel(f"{what} is not finite: NaN or inf in {bad}")
    return params


def from_record(record: Arrays, writable: bool = True) -> Params:
    """Unpack `Arrays` into named numpy arrays (each checked, see `array_of`)."""
    return {name: array_of(array, writable) for name, array in record.items()}


def array_of(array: NpyArray, writable: bool = True) -> np.ndarray:
    """An array's numpy data, trusting nothing in it.

    `np.load` accepts zip archives,
    allocates whatever shape the npy header claims and can fail in many ways.
    Here the bytes must be one npy array of a plain numeric dtype whose header
    describes exactly the bytes that follow; otherwise ValueError says why,
    before anything is allocated. Not `writable`: a read-only view of the
    array's bytes, for a reader that only reads (no copy of a model's worth).
    """
    if not isinstance(array, NpyArray) or array.stype != NPY_STYPE:
        raise ValueError("not a numpy array")
    data = array.data
    if not isinstance(data, bytes):
        raise ValueError("array data is not bytes")
    shape, fortran, dtype, offset = _npy_header(data)
    size = math.prod(shape) * dtype.itemsize
    if size != len(data) - offset:
        raise ValueError(f"npy header claims shape {shape} of {dtype}: {size} bytes, but {len(data) - offset} follow")
    values = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape, order="F" if fortran else "C")
    return values.copy() if writable else values  # writable, like np.load's


# The header numpy writes for a plain array (format 1.0), exactly: the
# arrays a federation exchanges are parsed by this pattern instead of numpy's
# `ast.literal_eval`, which costs more than the rest of a small array's
# reading (reply and residual shapes vary, so there is no reusing a parsed
# header). Anything else goes to numpy's own parser.
_NPY_PREFIX = 10  # magic (6), version (2), header length (2, format 1.0)
_PLAIN_HEADER = re.compile(rb"\{'descr': '([<>|=]?[biuf][0-9]{1,2})', 'fortran_order': (False|True), "
                           rb"'shape': \(((?:[0-9]{1,20}, )*[0-9]{1,20},?|)\), \} *\n")


def _plain_dtype(descr: str) -> np.dtype:
    """The dtype an npy header names, or ValueError: the pattern admits names
    numpy refuses with TypeError (`'|u0'`, `'<f3'`), and one such character
    in a reply must be that reply's error, not the run's."""
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError) as err:
        raise ValueError(f"npy header names no dtype numpy knows: {descr!r} ({err})") from None
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise ValueError(f"dtype {descr!r} is not a plain number type")
    return dtype


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of npy bytes; ValueError if
    they are not one npy array of a plain numeric dtype."""
    if data[:8] == b"\x93NUMPY\x01\x00":
        end = _NPY_PREFIX + int.from_bytes(data[8:10], "little")
        plain = _PLAIN_HEADER.fullmatch(data, _NPY_PREFIX, end) if len(data) >= end else None
        if plain:
            shape = tuple(int(d) for d in plain[3].split(b",") if d.strip())
            return shape, plain[2] == b"True", _plain_dtype(plain[1].decode()), end
    buffer = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(buffer)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(buffer, max_header_size=1024)
    except Exception as err:  # noqa: BLE001 - any malformed header is the same bad input
        raise ValueError(f"not an npy array: {type(err).__name__}: {err}") from None
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise ValueError(f"dtype {dtype} is not a plain number type")
    return shape, fortran, dtype, buffer.tell()


def wire_bytes(content: Content | Arrays) -> int:
    """Serialised size in bytes, the way Flower ships a message between
    SuperLink and SuperNode (`common.wire_size`)."""
    return wire_sizes(content)[0]


def wire_bytes_with_part(content: Content | Arrays, part: Arrays | None) -> tuple[int, int]:
    """`wire_bytes` of the content and of one record inside it (the server
    counts both for every reply)."""
    return wire_sizes(content, part)
