"""`common.wire_size` against Flower's own serialiser: the same bytes for any content."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common import flower_compat
from prunus.common.wire_size import wire_sizes


def _flower(content, part=None) -> tuple[int, int]:
    """Flower's count: every distinct object (by SHA-256 id), deflated."""
    sizes = {oid: len(obj.deflate()) for oid, obj in flower_compat.nested_objects(content).items()}
    return sum(sizes.values()), sum(sizes[oid] for oid in flower_compat.nested_objects(part)) if part is not None else 0


names = st.text(min_size=1, max_size=6)  # any unicode: JSON escapes it
arrays = st.builds(lambda n, fill, dtype: Array(np.full(n, fill, dtype=dtype)), st.integers(0, 40), st.integers(0, 2),
                   st.sampled_from(["float32", "int8", "uint8"]))  # few values: equal arrays and chunks occur
array_records = st.dictionaries(names, arrays, max_size=4).map(ArrayRecord)
configs = st.dictionaries(names, st.one_of(st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=4)),
                          max_size=3).map(ConfigRecord)
metrics = st.dictionaries(names, st.one_of(st.integers(0, 9), st.floats(allow_nan=False)), max_size=3).map(MetricRecord)
contents = st.dictionaries(names, st.one_of(array_records, configs, metrics), max_size=4).map(RecordDict)


@settings(max_examples=300, deadline=None)
@given(contents)
def test_sizes_equal_flowers_for_any_content(content):
    parts = [record for record in content.values() if isinstance(record, ArrayRecord)]
    assert wire_sizes(content) == _flower(content)
    for part in parts:
        assert wire_sizes(content, part) == _flower(content, part)


def test_arrays_larger_than_a_chunk_and_repeated_chunks(monkeypatch):
    monkeypatch.setattr("prunus.common.wire_size.CHUNK_BYTES", 64)
    monkeypatch.setattr("flwr.app.message.array.FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", 64)
    rng = np.random.default_rng(0)
    record = ArrayRecord({"zeros": Array(np.zeros(100, np.float32)),  # repeated chunks of zeros
                          "noise": Array(rng.normal(size=50).astype(np.float32)),
                          "same": Array(np.zeros(100, np.float32))})  # an Array equal to another
    content = RecordDict({"arrays": record, "config": ConfigRecord({"server-round": 3})})
    assert wire_sizes(content, record) == _flower(content, record)


def test_a_cached_chunk_list_is_not_trusted():
    """A client could pickle an Array whose cached chunk list (or id) lies about
    its data; the size comes from the data."""
    array = Array(np.zeros(1000, np.float32))
    honest = wire_sizes(ArrayRecord({"a": array}))[0]
    array.__dict__["_chunks"] = Array(np.zeros(1, np.float32)).slice_array()
    array.__dict__["_object_id"] = "0" * 64
    assert wire_sizes(ArrayRecord({"a": array}))[0] == honest


def test_an_unknown_object_is_refused():
    with pytest.raises(TypeError, match="cannot carry"):
        wire_sizes(object())
