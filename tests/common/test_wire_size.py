"""`common.wire_size` against Flower's own serialiser: the same bytes for any
content, and prunus's copy of Flower's wire constants is Flower's."""

import numpy as np
import pytest
from flwr.app import RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common import wire_size
from prunus.common.flower_records import to_flower
from prunus.common.params import npy_array
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap, NpyArray
from prunus.common.wire_size import wire_sizes


def _flower(content: Content, part: str | None = None) -> tuple[int, int]:
    """Flower's count: every distinct object (by SHA-256 id), deflated; `part`
    names an Arrays entry of `content`."""
    records = to_flower(content)
    sizes = {oid: len(obj.deflate()) for oid, obj in get_all_nested_objects(records).items()}
    below = get_all_nested_objects(records[part]) if part is not None else {}
    return sum(sizes.values()), sum(sizes[oid] for oid in below)


names = st.text(min_size=1, max_size=6)  # any unicode: JSON escapes it
arrays = st.builds(lambda n, fill, dtype: npy_array(np.full(n, fill, dtype=dtype)), st.integers(0, 40), st.integers(0, 2),
                   st.sampled_from(["float32", "int8", "uint8"]))  # few values: equal arrays and chunks occur
array_records = st.dictionaries(names, arrays, max_size=4).map(Arrays)
ints = st.one_of(st.integers(-5, 5), st.integers(-(2**63), 2**64 - 1))  # sint64 and uint64 both
floats = st.floats(allow_nan=False)
# a list is a SintList or (with any value past int64) a UintList: no negatives beside those
int_lists = st.one_of(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
                      st.lists(st.integers(0, 2**64 - 1), max_size=3))
config_values = st.one_of(ints, floats, st.booleans(), st.text(max_size=4), st.binary(max_size=4), int_lists,
                          *(st.lists(s, max_size=3) for s in (floats, st.booleans(), st.text(max_size=3),
                                                              st.binary(max_size=3))))
metric_values = st.one_of(ints, floats, int_lists, st.lists(floats, max_size=3))
keys = st.text(max_size=6)  # the empty key too (protobuf leaves it out)
configs = st.dictionaries(keys, config_values, max_size=3).map(ConfigMap)
metrics = st.dictionaries(keys, metric_values, max_size=3).map(MetricMap)
contents = st.dictionaries(names, st.one_of(array_records, configs, metrics), max_size=4).map(Content)


@settings(max_examples=400, deadline=None)
@given(contents)
def test_sizes_equal_flowers_for_any_content(content):
    assert wire_sizes(content) == _flower(content)
    for name, entry in content.items():
        if isinstance(entry, Arrays):
            assert wire_sizes(content, entry) == _flower(content, name)


def test_arrays_larger_than_a_chunk_and_repeated_chunks(monkeypatch):
    monkeypatch.setattr("prunus.common.wire_size.CHUNK_BYTES", 64)
    monkeypatch.setattr("flwr.app.message.array.FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", 64)
    rng = np.random.default_rng(0)
    record = Arrays({"zeros": npy_array(np.zeros(100, np.float32)),  # repeated chunks of zeros
                     "noise": npy_array(rng.normal(size=50).astype(np.float32)),
                     "same": npy_array(np.zeros(100, np.float32))})  # an array equal to another
    content = Content({"arrays": record, "config": ConfigMap({"server-round": 3})})
    assert wire_sizes(content, record) == _flower(content, "arrays")


def test_the_wire_constants_are_flowers():
    from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
    from flwr.supercore.constant import HEAD_BODY_DIVIDER, HEAD_VALUE_DIVIDER

    assert wire_size.CHUNK_BYTES == FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
    assert (wire_size.HEAD_VALUE_DIVIDER, wire_size.HEAD_BODY_DIVIDER) == (HEAD_VALUE_DIVIDER, HEAD_BODY_DIVIDER)
    assert {t.__name__: name for t, name in wire_size.TYPE_NAMES.items()} == {
        "NpyArray": "Array", "Arrays": "ArrayRecord", "Content": "RecordDict", "ConfigMap": "ConfigRecord",
        "MetricMap": "MetricRecord"}
    assert type(to_flower(Content())) is RecordDict


def test_an_unknown_object_is_refused():
    with pytest.raises(TypeError, match="cannot carry"):
        wire_sizes(object())
    with pytest.raises(TypeError, match="cannot carry"):
        wire_sizes(Content({"x": {"a": 1}}))


def _array(**fields) -> NpyArray:
    honest = npy_array(np.zeros(3, np.uint8))
    return NpyArray(**{"dtype": honest.dtype, "shape": honest.shape, "data": honest.data, "stype": honest.stype,
                       **fields})


UNCARRIED = {
    "str data": Arrays({"x": _array(data="abc")}),
    "no data": Arrays({"x": _array(data=None)}),
    "bytearray data": Arrays({"x": _array(data=bytearray(3))}),
    "a float in the shape": Arrays({"x": _array(shape=(3.0,))}),
    "no shape": Arrays({"x": _array(shape=None)}),
    "no dtype": Arrays({"x": _array(dtype=None)}),
    "a record in an Arrays": Arrays({"x": ConfigMap({"a": 1})}),
    "an array in a content": Content({"x": npy_array(np.zeros(3))}),
    "a content in a content": Content({"x": Content()}),
    "a non-str name": Content({1: ConfigMap()}),
    "a str metric": Content({"m": MetricMap({"a": "1"})}),
    "a dict in a config": Content({"c": ConfigMap({"a": {"b": 1}})}),
}


@pytest.mark.parametrize("content", UNCARRIED.values(), ids=list(UNCARRIED))
def test_content_no_message_can_carry_is_not_carried_by_name(content):
    """What Flower's records do not hold has no size: a server counting a reply
    learns here that no transport shipped it. An array of str data, a shape of
    floats or a record in an Arrays raised whatever the walk met first (a
    TypeError from memoryview or json), or was sized as if it were carried."""
    with pytest.raises(wire_size.NotCarried, match="cannot carry"):
        wire_sizes(content)
