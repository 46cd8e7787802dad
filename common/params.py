"""Shared parameters as named numpy arrays, and their Flower `ArrayRecord` form."""

from __future__ import annotations

import functools
import io
import math
import re

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from prunus.common import flower_compat
from prunus.common.wire_size import wire_sizes

Params = dict[str, np.ndarray]


def to_record(params: Params) -> ArrayRecord:
    """Pack named float32 arrays into an ArrayRecord (Flower serialises it)."""
    return record_of({name: npy_array(value) for name, value in params.items()})


def record_of(arrays: dict[str, Array]) -> ArrayRecord:
    """An ArrayRecord holding these Arrays themselves: `ArrayRecord(arrays)`
    builds a second Array of each (Flower's constructor copies them), and an
    Array costs 10-20 us to build; a client makes a dozen records a message."""
    record = ArrayRecord()
    for name, array in arrays.items():
        record[name] = array
    return record


def npy_array(value: np.ndarray) -> Array:
    """The `Array` that `Array(value)` makes, byte for byte (npy format 1.0),
    for a fifth of its cost: Flower's constructor runs `np.save` on a
    BytesIO, and a client builds a dozen of these per message."""
    if not (isinstance(value, np.ndarray) and value.ndim and value.flags.c_contiguous):
        value = np.ascontiguousarray(value)
    name, header = _npy_header_of(value.dtype, value.shape)
    data = b"".join((header, value.reshape(-1).view(np.uint8)))
    return flower_compat.array(name, value.shape, "numpy.ndarray", data)


@functools.lru_cache(maxsize=4096)
def _npy_header_of(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[str, bytes]:
    """The dtype's name and numpy's own npy 1.0 header of a C-ordered array
    (the shapes a run exchanges repeat: the model's tensors, a user's
    vectors, the payloads)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": shape})
    return str(dtype), buffer.getvalue()


def from_record(record: ArrayRecord, writable: bool = True) -> Params:
    """Unpack an ArrayRecord into named numpy arrays (each checked, see `array_of`)."""
    return {name: array_of(array, writable) for name, array in record.items()}


def array_of(array: Array, writable: bool = True) -> np.ndarray:
    """An `Array`'s numpy data, trusting nothing in it.

    `Array.numpy()` hands the bytes to `np.load`, which accepts zip archives,
    allocates whatever shape the npy header claims and can fail in many ways.
    Here the bytes must be one npy array of a plain numeric dtype whose header
    describes exactly the bytes that follow; otherwise ValueError says why,
    before anything is allocated. Not `writable`: a read-only view of the
    Array's bytes, for a reader that only reads (no copy of a model's worth).
    """
    if not isinstance(array, Array) or array.stype != "numpy.ndarray":
        raise ValueError("not a numpy Array")
    data = array.data
    if not isinstance(data, bytes):
        raise ValueError("Array data is not bytes")
    shape, fortran, dtype, offset = _npy_header(data)
    size = math.prod(shape) * dtype.itemsize
    if size != len(data) - offset:
        raise ValueError(f"npy header claims shape {shape} of {dtype}: {size} bytes, but {len(data) - offset} follow")
    values = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape, order="F" if fortran else "C")
    return values.copy() if writable else values  # writable, like np.load's


# The header numpy writes for a plain array (format 1.0), exactly: the
# arrays a federation exchanges are parsed by this pattern instead of numpy's
# `ast.literal_eval` (40 us a header; reply and residual shapes vary, so
# there is no reusing one). Anything else goes to numpy's own parser.
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


def wire_bytes(content: RecordDict | ArrayRecord) -> int:
    """Serialised size in bytes, the way Flower ships a message between
    SuperLink and SuperNode (`common.wire_size`)."""
    return wire_sizes(content)[0]


def wire_bytes_with_part(content: RecordDict | ArrayRecord, part: ArrayRecord | None) -> tuple[int, int]:
    """`wire_bytes` of the content and of one record inside it (the server
    counts both for every reply)."""
    return wire_sizes(content, part)
