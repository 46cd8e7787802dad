"""Shared parameters as named numpy arrays, and their Flower `ArrayRecord` form."""

from __future__ import annotations

import io
import math

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from prunus.common.wire_size import wire_sizes

Params = dict[str, np.ndarray]


def to_record(params: Params) -> ArrayRecord:
    """Pack named float32 arrays into an ArrayRecord (Flower serialises it)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in params.items()})


def from_record(record: ArrayRecord) -> Params:
    """Unpack an ArrayRecord into named numpy arrays (each checked, see `array_of`)."""
    return {name: array_of(array) for name, array in record.items()}


def array_of(array: Array) -> np.ndarray:
    """An `Array`'s numpy data, trusting nothing in it.

    `Array.numpy()` hands the bytes to `np.load`, which accepts zip archives,
    allocates whatever shape the npy header claims and can fail in many ways.
    Here the bytes must be one npy array of a plain numeric dtype whose header
    describes exactly the bytes that follow; otherwise ValueError says why,
    before anything is allocated.
    """
    if not isinstance(array, Array) or array.stype != "numpy.ndarray":
        raise ValueError("not a numpy Array")
    data = array.data
    if not isinstance(data, bytes):
        raise ValueError("Array data is not bytes")
    buffer = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(buffer)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(buffer, max_header_size=1024)
    except Exception as err:  # noqa: BLE001 - any malformed header is the same bad input
        raise ValueError(f"not an npy array: {type(err).__name__}: {err}") from None
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise ValueError(f"dtype {dtype} is not a plain number type")
    size = math.prod(shape) * dtype.itemsize
    if size != len(data) - buffer.tell():
        raise ValueError(f"npy header claims shape {shape} of {dtype}: {size} bytes, but {len(data) - buffer.tell()} follow")
    values = np.frombuffer(data, dtype=dtype, offset=buffer.tell())
    return values.reshape(shape, order="F" if fortran else "C").copy()  # writable, like np.load's


def wire_bytes(content: RecordDict | ArrayRecord) -> int:
    """Serialised size in bytes, the way Flower ships a message between
    SuperLink and SuperNode (`common.wire_size`)."""
    return wire_sizes(content)[0]


def wire_bytes_with_part(content: RecordDict | ArrayRecord, part: ArrayRecord | None) -> tuple[int, int]:
    """`wire_bytes` of the content and of one record inside it (the server
    counts both for every reply)."""
    return wire_sizes(content, part)
