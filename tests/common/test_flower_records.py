"""The Flower edge: prunus content crosses to Flower's records and back
unchanged (the same bytes objects), and what comes back is type-checked and
bounded before anything reads it."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from prunus.common import flower_records
from prunus.common.flower_records import from_flower, to_flower
from prunus.common.params import npy_array
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap


def _content() -> Content:
    return Content({"arrays": Arrays({"w": npy_array(np.arange(6, dtype=np.float32).reshape(2, 3))}),
                    "config": ConfigMap({"server-round": 3, "ids": [1, 2], "key": b"k", "on": True}),
                    "metrics": MetricMap({"num-examples": 4, "loss": 0.5})})


def test_content_crosses_to_flower_and_back_unchanged_without_copying_arrays():
    content = _content()
    records = to_flower(content)
    assert isinstance(records["arrays"], ArrayRecord) and isinstance(records["config"], ConfigRecord)
    back = from_flower(records)
    assert back == content and type(back["metrics"]) is MetricMap
    assert back["arrays"]["w"].data is content["arrays"]["w"].data
    np.testing.assert_array_equal(back["arrays"]["w"].numpy(), np.arange(6).reshape(2, 3))


def _with_array_field(field: str, value) -> RecordDict:
    array = Array(np.zeros(2, np.float32))
    array.__dict__[field] = value  # what a pickled reply can hold
    record = ArrayRecord()
    record["w"] = array  # (the constructor would rebuild the Array from its fields)
    return RecordDict({"arrays": record})


@pytest.mark.parametrize(("records", "match"), [
    ("not records", "not a RecordDict"),
    (_with_array_field("data", [1, 2, 3]), "not an Array of a str dtype"),
    (_with_array_field("shape", ("a",)), "not an Array of a str dtype"),
    (_with_array_field("dtype", 5), "not an Array of a str dtype"),
    (RecordDict({"m": MetricRecord({"num-examples": 1})}), None),
])
def test_what_comes_back_is_type_checked(records, match):
    if match is None:
        assert from_flower(records)["m"] == {"num-examples": 1}
        return
    with pytest.raises(ValueError, match=match):
        from_flower(records)


def test_a_bool_metric_and_a_foreign_value_are_refused():
    metrics = MetricRecord({"num-examples": 1})
    metrics.__dict__["_data"]["flag"] = True  # past Flower's own setter, as a pickle can
    with pytest.raises(ValueError, match="flag"):
        from_flower(RecordDict({"m": metrics}))


def test_content_past_the_limits_is_refused_before_it_is_converted(monkeypatch):
    monkeypatch.setattr(flower_records, "MAX_ENTRIES", 10)
    with pytest.raises(ValueError, match="11 entries, more than 10"):
        from_flower(RecordDict({"m": MetricRecord({f"k{i}": i for i in range(11)})}))
    monkeypatch.setattr(flower_records, "MAX_LIST", 3)
    with pytest.raises(ValueError, match="a list of 4 values"):
        from_flower(RecordDict({"c": ConfigRecord({"ids": [1, 2, 3, 4]})}))
    monkeypatch.setattr(flower_records, "MAX_RECORDS", 1)
    with pytest.raises(ValueError, match="2 records"):
        from_flower(RecordDict({"a": ConfigRecord(), "b": ConfigRecord()}))
