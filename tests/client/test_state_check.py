"""A client's state is checked before it is used (`client.state_check`,
`client.state_format`): a damaged or planted state is a `StateError` naming
what is wrong, never a crash, an allocation its header asks for, or an
update of 1e30."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from prunus.client import state_slots
from prunus.client.state_check import STATE_LIMIT, checked_private, checked_residual
from prunus.client.state_format import MAX_HEADER, StateError, pack, unpack
from prunus.common.compression.sparse import residual_to_state
from prunus.common.params import npy_array, to_record
from prunus.common.payload import Arrays, Content, NpyArray

SHAPES = {"items": (10, 3), "bias": (10, 1)}
ROWS = {"users": (3,)}


def _residual(**replace: np.ndarray) -> Arrays:
    """A residual of two rows of `items` (kept as rows) and `bias` kept whole, with arrays replaced."""
    items = np.zeros((10, 3), np.float32)
    items[[2, 7]] = 0.5
    arrays = residual_to_state({"items": items, "bias": np.full((10, 1), 0.25, np.float32)})
    assert {"items.rows", "items.shape", "items.val", "bias.val"} == set(arrays)
    return to_record({**arrays, **replace})


def test_an_honest_state_passes_as_it_was_written():
    users = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(checked_private(to_record({"users": users}), ROWS, 2)["users"], users)
    residual = checked_residual(_residual(), SHAPES)
    assert residual["items.rows"].tolist() == [2, 7] and residual["bias.val"].shape == (10, 1)


HOSTILE_PRIVATE = {
    "float64": ({"users": np.ones((2, 3))}, r"'users' is float64 of shape \(2, 3\), not float32 of shape \(2, 3\)"),
    "a row short": ({"users": np.ones((1, 3), np.float32)}, r"of shape \(1, 3\), not float32 of shape \(2, 3\)"),
    "flattened": ({"users": np.ones(6, np.float32)}, r"of shape \(6,\)"),
    "another table": ({"users": np.ones((2, 3), np.float32), "extra": np.ones(1, np.float32)},
                      r"private tables \['extra', 'users'\], the model's are \['users'\]"),
    "NaN": ({"users": np.full((2, 3), np.nan, np.float32)}, "'users' holds NaN or infinity"),
    "x1e30": ({"users": np.full((2, 3), 1e30, np.float32)}, "holds an entry of 1e\\+30, beyond the 1e\\+06"),
}


@pytest.mark.parametrize("case", HOSTILE_PRIVATE)
def test_hostile_user_vectors_are_refused_naming_why(case):
    arrays, why = HOSTILE_PRIVATE[case]
    with pytest.raises(StateError, match=why):
        checked_private(to_record(arrays), ROWS, 2)


HOSTILE_RESIDUAL = {
    "NaN": (dict(bias__val=np.full((10, 1), np.nan, np.float32)), "'bias.val' holds NaN or infinity"),
    "infinity": (dict(items__val=np.full((2, 3), np.inf, np.float32)), "'items.val' holds NaN or infinity"),
    "x1e30": (dict(bias__val=np.full((10, 1), 1e30, np.float32)), "an entry of 1e\\+30"),
    "just past the bound": (dict(bias__val=np.full((10, 1), STATE_LIMIT * 1.01, np.float32)), "beyond the 1e\\+06"),
    "integers": (dict(bias__val=np.ones((10, 1), np.int64)), "'bias': values of dtype int64, not float32"),
    "float64": (dict(items__val=np.ones((2, 3))), "'items': values of dtype float64"),
    "a row short": (dict(bias__val=np.ones((9, 1), np.float32)), r"values of shape \(9, 1\), the model's is \(10, 1\)"),
    "rows out of range": (dict(items__rows=np.array([2, 10], np.int32)), r"increasing strictly within \[0, 10\)"),
    "negative rows": (dict(items__rows=np.array([-1, 7], np.int32)), "increasing strictly"),
    "rows twice": (dict(items__rows=np.array([7, 7], np.int32)), "increasing strictly"),
    "rows as floats": (dict(items__rows=np.array([2.0, 7.0])), "must be integers"),
    "a shape of its own": (dict(items__shape=np.array([10**9, 3], np.int64)), r"shape \[1000000000, 3\]"),
    "rows and values apart": (dict(items__val=np.ones((3, 3), np.float32)), r"\(3, 3\) for 2 rows of 3"),
    "a tensor the model lacks": (dict(other__val=np.ones(2, np.float32)), r"tensors \['other'\] are not the model's"),
    "a stray array": (dict(items__extra=np.ones(2, np.float32)), r"\['items.extra'\] belong to no tensor"),
}


@pytest.mark.parametrize("case", HOSTILE_RESIDUAL)
def test_hostile_residuals_are_refused_naming_why(case):
    replace, why = HOSTILE_RESIDUAL[case]
    with pytest.raises(StateError, match=why):
        checked_residual(_residual(**{k.replace("__", "."): v for k, v in replace.items()}), SHAPES)


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("users.npy", b"\0" * 10**7)
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "why"), [
    (_zip_bomb(), "not an npy array"),  # np.load would open the archive
    (npy_array(np.zeros((1, 1), np.float32)).data.replace(b"(1, 1)", b"(10**12,)"), "not an npy array"),
    (npy_array(np.zeros(1, np.float32)).data.replace(b"(1,)", b"(1000000, 1000000)"), "claims shape"),
    (npy_array(np.zeros(2, np.float32)).data[:-3], "but 5 follow"),
], ids=["zip bomb", "bad header", "shape bomb", "cut short"])
def test_arrays_that_are_not_plain_npy_are_refused_before_anything_is_allocated(data, why):
    with pytest.raises(StateError, match=why):
        checked_private(Arrays({"users": NpyArray("float32", (2, 3), data)}), ROWS, 2)


def _bytes(state: Content) -> bytes:
    head, blobs = pack(state)
    return head + b"".join(blobs)


def _unpack(data: bytes) -> Content:
    stream = io.BytesIO(data)
    return unpack(stream.read, "the state")


def _header(meta: str) -> bytes:
    return len(meta).to_bytes(8, "little") + meta.encode()


STATE = _bytes(Content({"private": to_record({"users": np.ones((2, 3), np.float32)}),
                        "residual": _residual()}))


@pytest.mark.parametrize(("data", "why"), [
    (b"", "damaged header: 0 of its 8 length bytes"),
    (STATE[:5], "damaged header: 5 of its 8 length bytes"),
    (STATE[:20], "is truncated: its header needs"),
    (STATE[:-7], "is truncated: 'residual/bias.val' needs"),
    ((MAX_HEADER + 1).to_bytes(8, "little") + STATE[8:], f"it claims {MAX_HEADER + 1:,} bytes"),
    ((2**63).to_bytes(8, "little") + STATE[8:], "damaged header: it claims"),
    (_header("not json"), "damaged header: Expecting value"),
    (_header("[1, 2]"), "a JSON list, not an object"),
    (_header('{"private": ["<f4", [1], "numpy.ndarray", 0, 4]}'), "is not 'record/name'"),
    (_header('{"a/b": [1]}'), r"\[1\] is not \[dtype, shape, stype, start, end\]"),
    (_header('{"a/b": ["<f4", [1], "numpy.ndarray", -4, 4]}'), "is not"),
    (_header('{"a/b": ["<f4", [1], "numpy.ndarray", 4, 8]}'), "spans bytes 4 to 8; the arrays before it end at 0"),
    (_header('{"a/b": ["<f4", [1], "numpy.ndarray", 0, 8], "a/c": ["<f4", [1], "numpy.ndarray", 4, 12]}'),
     "'a/c' spans bytes 4 to 12; the arrays before it end at 8"),
], ids=["empty", "cut in the length", "cut in the header", "cut in the arrays", "header too long", "length 2**63",
        "not json", "a list", "no record", "too few fields", "negative start", "a gap", "overlapping"])
def test_a_damaged_state_file_is_an_error_naming_it(data, why):
    with pytest.raises(StateError, match=f"client state the state .*{why}"):
        _unpack(data)


def test_a_damaged_mapped_slot_is_an_error_naming_it(tmp_path):
    """The mapped store reads the same bytes from shared memory: a slot whose
    header was overwritten is that client's error too."""
    state = Content({"private": to_record({"users": np.ones((2, 3), np.float32)})})
    state_slots.save(tmp_path, 4, 1, state)
    try:
        path = tmp_path / f"4{state_slots.SUFFIX}"
        with open(path, "r+b") as handle:  # the slot's first bytes: its header's length
            handle.seek(state_slots._HEAD)
            handle.write((2**40).to_bytes(8, "little"))
        state_slots.forget()
        with pytest.raises(StateError, match=r"4\.slots \(slot 0\) has a damaged header: it claims"):
            state_slots.load(tmp_path, 4, 1)
    finally:
        state_slots.forget()
