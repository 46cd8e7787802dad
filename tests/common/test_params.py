"""Arrays from a record: only well-formed npy data of plain numbers, sized by what arrived."""

import io
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
from flwr.app import Array
from hypothesis import given
from hypothesis.extra.numpy import array_shapes, arrays

from prunus.common.params import _PLAIN_HEADER, _npy_header, array_of, from_record, npy_array, to_record
from prunus.common.payload import Arrays, NpyArray


def _array_with(data: bytes) -> NpyArray:
    return NpyArray("float32", (3,), data)  # what a hostile sender can put on the wire


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def test_arrays_round_trip_exactly():
    params = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64),
              "f": np.asfortranarray(np.arange(6.0).reshape(2, 3))}  # fmt: skip
    back = from_record(to_record(params))
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype and back[name].flags.writeable


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", _npy(np.zeros(2)))
    return buffer.getvalue()


def _claiming(shape: tuple[int, ...], payload: bytes = b"\0" * 4) -> bytes:
    """An npy header claiming `shape` of float32, then `payload`."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


@pytest.mark.parametrize(("data", "reason"), [
    (_zip(), "not an npy array"),
    (_claiming((10**12,)), "claims shape"),  # 4 TB claimed, 4 bytes sent
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4',", "not an npy array"),
    (_npy(np.array(["a", "b"])), "not a plain number type"),
    (_npy(np.zeros(4, np.float32))[:-3], "claims shape"),
    (b"", "not an npy array"),
])
def test_malformed_array_data_is_a_value_error_before_any_allocation(data, reason):
    with pytest.raises(ValueError, match=reason):
        array_of(_array_with(data))
    with pytest.raises(ValueError):
        from_record(Arrays({"x": _array_with(data)}))


@given(arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.int8]),
              array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
def test_npy_array_is_the_array_flower_makes(value):
    ours, flowers = npy_array(value), Array(np.ascontiguousarray(value))
    assert (ours.dtype, ours.shape, ours.stype, ours.data) == (flowers.dtype, flowers.shape, flowers.stype, flowers.data)
    np.testing.assert_array_equal(array_of(ours), value)


def test_a_plain_header_still_checks_the_size_of_what_follows():
    good = _npy(np.zeros(4, np.float32))
    array_of(_array_with(good))
    with pytest.raises(ValueError, match="16 bytes, but 12 follow"):
        array_of(_array_with(good[:-4]))


@given(arrays(st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_]),
              array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)), st.booleans())
def test_the_plain_header_pattern_reads_what_numpy_reads(value, fortran):
    """Shape, order, dtype and offset as numpy's own parser gives them."""
    value = np.asfortranarray(value) if fortran else value
    data = _npy(value)
    buffer = io.BytesIO(data)
    np.lib.format.read_magic(buffer)
    shape, order, dtype = np.lib.format.read_array_header_1_0(buffer)
    assert _PLAIN_HEADER.fullmatch(data, 10, buffer.tell())
    assert _npy_header(data) == (shape, order, dtype, buffer.tell())


def _with_descr(descr: str, payload: bytes = b"") -> bytes:
    """npy 1.0 bytes whose header names `descr` as numpy would write it."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': (0,), }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


DESCRS = [prefix + kind + str(size) for prefix in ("", "<", ">", "|", "=") for kind in "biuf" for size in range(100)]


def test_every_dtype_name_the_fast_header_path_admits_is_read_or_refused_as_a_value_error():
    """One character in a reply's header (`'|u0'`, `'<f3'`) once raised
    numpy's TypeError out of the server's intake and ended the run."""
    refused = 0
    for descr in DESCRS:
        data = _with_descr(descr)
        assert _PLAIN_HEADER.fullmatch(data, 10, len(data))
        try:
            shape, _, dtype, _ = _npy_header(data)
        except ValueError:
            refused += 1
            continue
        assert shape == (0,) and dtype.kind in "biuf" and dtype.itemsize > 0
    assert refused > len(DESCRS) // 2  # '|u0', '<f3', 'b2', ... are most of them
    with pytest.raises(ValueError, match="no dtype numpy knows"):
        array_of(_array_with(_with_descr("|u0")))
    with pytest.raises(ValueError, match="no dtype numpy knows"):
        array_of(_array_with(_with_descr("<f3")))
