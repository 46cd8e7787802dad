"""The Flower edge: prunus `Content` to Flower's records and back.

The only module besides the Flower apps (`server.app`, `client.app`) and the
accelerators (`common.flower_compat`) that imports Flower. Every field
crosses unchanged (an array's npy bytes are the same bytes object, not a
copy), so `common.wire_size` counts on prunus content exactly the bytes
Flower ships.

What arrives from Flower is checked for type here, before anything reads it:
a reply built in another process can hold anything its pickle held, not only
what Flower's record constructors admit. A record of another kind, an array
whose fields are not str/str/bytes and a tuple of ints, a config or metric
value of a type Flower's records do not carry: `ValueError` naming it. So is
a content past the limits below, counted before anything is converted: no
message of prunus's holds more, and a reply that does would only cost the
server time and memory.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from prunus.common import flower_compat
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap, NpyArray

MAX_RECORDS = 16  # records in one message's content
MAX_ENTRIES = 4096  # arrays, settings or metrics in one record
MAX_LIST = 1_000_000  # elements of one config or metric list (a round's client ids)
_CONFIG_SCALARS = (bool, int, float, str, bytes)
_METRIC_SCALARS = (int, float)


def to_flower(content: Content) -> RecordDict:
    """The RecordDict Flower ships for `content`."""
    records = RecordDict()
    for name, entry in content.items():
        if isinstance(entry, Arrays):
            records[name] = to_array_record(entry)
        elif isinstance(entry, ConfigMap):
            records[name] = ConfigRecord(dict(entry))
        elif isinstance(entry, MetricMap):
            records[name] = MetricRecord(dict(entry))
        else:
            raise TypeError(f"content entry {name!r} is a {type(entry).__name__}, not Arrays, ConfigMap or MetricMap")
    return records


def to_array_record(arrays: Arrays) -> ArrayRecord:
    """An ArrayRecord of these arrays' own bytes (set one by one: Flower's
    constructor would copy each Array)."""
    record = ArrayRecord()
    for name, array in arrays.items():
        record[name] = flower_compat.array(array.dtype, array.shape, array.stype, array.data)
    return record


def from_flower(records: Any) -> Content:
    """The prunus content of a Flower RecordDict, every entry checked for type."""
    if not isinstance(records, RecordDict):
        raise ValueError(f"content is a {type(records).__name__}, not a RecordDict")
    if len(records) > MAX_RECORDS:
        raise ValueError(f"content of {len(records)} records, more than {MAX_RECORDS}")
    content = Content()
    for name, record in records.items():
        if not isinstance(name, str):
            raise ValueError(f"a record name is a {type(name).__name__}, not a str")
        if isinstance(record, ArrayRecord):
            content[name] = Arrays({key: _array(name, key, array) for key, array in _items(name, record)})
        elif isinstance(record, ConfigRecord):
            content[name] = ConfigMap(_values(name, record, _CONFIG_SCALARS))
        elif isinstance(record, MetricRecord):
            content[name] = MetricMap(_values(name, record, _METRIC_SCALARS))
        else:
            raise ValueError(f"record {name!r} is a {type(record).__name__}")
    return content


def _items(record_name: str, record: Any) -> list[tuple[str, Any]]:
    if len(record) > MAX_ENTRIES:
        raise ValueError(f"record {record_name!r} of {len(record)} entries, more than {MAX_ENTRIES}")
    items = list(record.items())
    for key, _ in items:
        if not isinstance(key, str):
            raise ValueError(f"record {record_name!r} has a key of type {type(key).__name__}")
    return items


def _array(record: str, key: str, array: Any) -> NpyArray:
    if not isinstance(array, Array):
        raise ValueError(f"array {record}/{key} is a {type(array).__name__}, not an Array")
    dtype, shape, stype, data = (getattr(array, f, None) for f in ("dtype", "shape", "stype", "data"))
    if not (isinstance(dtype, str) and isinstance(stype, str) and isinstance(data, bytes)
            and isinstance(shape, (tuple, list)) and all(type(d) is int for d in shape)):
        raise ValueError(f"array {record}/{key} is not an Array of a str dtype, int shape and bytes")
    return NpyArray(dtype, tuple(shape), data, stype)


def _values(record: str, values: Any, scalars: tuple[type, ...]) -> dict[str, Any]:
    out = {}
    for key, value in _items(record, values):
        if isinstance(value, list) and len(value) > MAX_LIST:
            raise ValueError(f"{record}/{key}: a list of {len(value)} values, more than {MAX_LIST}")
        ok = isinstance(value, scalars) or (isinstance(value, list) and any(
            all(isinstance(v, kind) for v in value) for kind in scalars))
        if not ok or (scalars is _METRIC_SCALARS and _has_bool(value)):
            raise ValueError(f"{record}/{key}: a {type(value).__name__} is no {type(values).__name__} value")
        out[key] = value
    return out


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))
