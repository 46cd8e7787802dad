"""The exact wire size of a message's content as Flower ships it, without Flower.

Flower (1.41 and 1.42 alike) ships each distinct object of a content once:
the RecordDict, its records, their Arrays and the Arrays' chunks. An object
goes deflated: a header `type<space>child ids<space>body length`, a NUL
byte, then the body. A child id is the SHA-256 digest of the child's
deflated bytes, 64 hex characters, and two objects are the same object when
their ids are equal. A config or metric record's body is its protobuf
message (`flwr.proto.recorddict`).

prunus's `Content` maps onto those objects one to one (`common.flower_records`
keeps every field), so its size is computed here from the content alone,
with no Flower installed (the in-process engine counts the same bytes), and
without hashing anything:

* every id has the same length, so a body's length does not depend on its
  children's ids (a placeholder of that length stands in for them);
* two objects are the same object exactly when their contents are equal,
  which is compared directly, and only among chunks of equal length;
* a record's protobuf body is sized field by field (`_proto_record_size`).

It reads only what a message carries (data, dtype, shape, stype, record
entries). `tests/common/test_wire_size.py` checks the sizes against Flower's
own serialiser, and the constants below against Flower's.

A content that holds anything Flower's records do not (a record of another
type, an array whose fields are not str/str/bytes and a tuple of ints, a
value a config or metric record has no field for) has no size: `NotCarried`
names it. No transport ships such a content, so a server counting a reply
first learns here that it is malformed (`server.intake` rejects it).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Hashable, Mapping

from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap, NpyArray

ID_LENGTH = 64  # a SHA-256 hex digest
_PLACEHOLDER_ID = "0" * ID_LENGTH
HEAD_VALUE_DIVIDER, HEAD_BODY_DIVIDER = " ", b"\x00"  # flwr.supercore.constant
# an Array's data travels in chunks of at most this many bytes (Flower reads the same variable)
CHUNK_BYTES = int(os.getenv("FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", "5242880"))
# the name each object's header gives its type: Flower's class names
TYPE_NAMES = {NpyArray: "Array", Arrays: "ArrayRecord", Content: "RecordDict", ConfigMap: "ConfigRecord",
              MetricMap: "MetricRecord"}


class NotCarried(TypeError):
    """Content no message can carry; the message says what."""


def wire_sizes(content: Content | Arrays, part: Arrays | None = None) -> tuple[int, int]:
    """Bytes Flower ships for `content`, and for the objects of `part` (an
    `Arrays` inside it; 0 without one)."""
    objects = _Objects()
    total = sum(objects.sizes[key] for key in objects.reachable(content))
    return total, (sum(objects.sizes[key] for key in objects.reachable(part)) if part is not None else 0)


def _header(type_name: str, children: int, body: int) -> int:
    """Length of an object's header, divider included."""
    ids = ID_LENGTH * children + max(children - 1, 0)  # comma-separated
    return len(type_name.encode()) + 2 * len(HEAD_VALUE_DIVIDER) + ids + len(str(body)) + len(HEAD_BODY_DIVIDER)


class _Objects:
    """The distinct objects of one content: a key per object (equal keys: the
    same object on the wire) and each key's deflated size."""

    def __init__(self) -> None:
        self.sizes: dict[Hashable, int] = {}
        self._keys: dict[int, Hashable] = {}  # id() of an object walked -> its key
        self._below: dict[Hashable, set[Hashable]] = {}  # key -> its own and every descendant's key
        self._chunks: dict[int, list[tuple[memoryview, int | None, Hashable]]] = {}  # length -> (data, crc, key)

    def reachable(self, obj: object) -> set[Hashable]:
        """Keys of `obj` and of every object below it."""
        out: set[Hashable] = set()
        self._walk(obj, out)
        return out

    def _walk(self, obj: object, out: set[Hashable]) -> Hashable:
        if id(obj) in self._keys:  # walked before: its key and its children's are known
            key = self._keys[id(obj)]
            out |= self._below[key]
            return key
        below: set[Hashable] = set()
        key = self._key(obj, below)
        below.add(key)
        self._keys[id(obj)] = key
        self._below[key] = below
        out |= below
        return key

    def _key(self, obj: object, below: set[Hashable]) -> Hashable:
        type_name = TYPE_NAMES.get(type(obj), "")
        if isinstance(obj, NpyArray):
            _check_array(obj)
            data = memoryview(obj.data).cast("B")
            chunks = [self._chunk(data[start:start + CHUNK_BYTES], below) for start in range(0, len(data), CHUNK_BYTES)]
            unique = list(dict.fromkeys(chunks))
            body = json.dumps({"dtype": obj.dtype, "shape": obj.shape, "stype": obj.stype,
                               "arraychunk_ids": [unique.index(c) for c in chunks]}).encode()
            return self._add((type_name, body, tuple(unique)), _header(type_name, len(unique), len(body)) + len(body))
        if isinstance(obj, (Arrays, Content)):
            _check_children(obj)
            entries = tuple((name, self._walk(child, below)) for name, child in obj.items())
            body = len(json.dumps(dict.fromkeys(obj, _PLACEHOLDER_ID)).encode())
            unique = len({key for _, key in entries})
            return self._add((type_name, entries), _header(type_name, unique, body) + body)
        if isinstance(obj, (ConfigMap, MetricMap)):  # no children
            body = _proto_record_size(obj, _CONFIG_TYPES if isinstance(obj, ConfigMap) else _METRIC_TYPES)
            return self._add((type_name, _record_key(obj)), _header(type_name, 0, body) + body)
        raise NotCarried(f"a message cannot carry a {type(obj).__qualname__}")

    def _chunk(self, data: memoryview, below: set[Hashable]) -> Hashable:
        """The key of an ArrayChunk: equal data, equal key."""
        same_length = self._chunks.setdefault(len(data), [])
        crc = zlib.crc32(data) if same_length else None  # only a chunk of the same length can be equal
        for i, (other, other_crc, key) in enumerate(same_length):
            if other_crc is None:
                other_crc = zlib.crc32(other)
                same_length[i] = (other, other_crc, key)
            if other_crc == crc and other == data:
                below.add(key)
                return key
        key = ("ArrayChunk", len(data), len(self.sizes))
        same_length.append((data, crc, key))
        below.add(key)
        self.sizes[key] = _header("ArrayChunk", 0, len(data)) + len(data)
        return key

    def _add(self, key: Hashable, size: int) -> Hashable:
        self.sizes[key] = size
        return key


def _check_array(array: NpyArray) -> None:
    """An Array's fields as Flower's Array holds them: str dtype and stype, bytes, a tuple of ints."""
    shape = array.shape
    if not (isinstance(array.dtype, str) and isinstance(array.stype, str) and isinstance(array.data, bytes)
            and isinstance(shape, (tuple, list)) and all(type(d) is int for d in shape)):
        raise NotCarried("a message cannot carry an array whose fields are not a str dtype, an int shape, bytes "
                         "and a str stype")


def _check_children(obj: Arrays | Content) -> None:
    """A content's entries are records, an Arrays' are arrays, each under a str name."""
    kinds = (NpyArray,) if isinstance(obj, Arrays) else (Arrays, ConfigMap, MetricMap)
    for name, child in obj.items():
        if not isinstance(name, str) or not isinstance(child, kinds):
            raise NotCarried(f"a {TYPE_NAMES.get(type(obj), type(obj).__qualname__)} cannot carry a "
                             f"{type(child).__qualname__} under a {type(name).__qualname__} name")


# ------------------------------------------------- protobuf record bodies
# ConfigRecordValue / MetricRecordValue: a oneof of scalars (fields 1-6) and
# lists (21-26); Flower picks the first of its allowed types that the value
# (or every element of a list value) is an instance of, bool first.
_INT64_MAX = 2**63 - 1
_CONFIG_TYPES = (bool, int, float, str, bytes)
_METRIC_TYPES = (float, int)
_SCALAR_TAG, _LIST_TAG = 1, 2  # field numbers 1-6 and 21-26 take one and two tag bytes


def _record_key(record: Mapping) -> tuple:
    """Equal keys for records Flower would ship as one object (type-exact, so 1 and 1.0 differ)."""
    return tuple((name, type(value), tuple(map(type, value)) if isinstance(value, list) else (), repr(value))
                 for name, value in record.items())


def _varint(value: int) -> int:
    """Bytes of an unsigned varint."""
    return max(1, (value.bit_length() + 6) // 7)


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _delimited(length: int) -> int:
    """A length-delimited field's length and payload, tag excluded."""
    return _varint(length) + length


def _scalar(value: object, kind: type) -> int:
    """Bytes of one value (no tag) as `kind`'s field encodes it."""
    if kind is float:
        return 8
    if kind is bool:
        return 1
    if kind is int:
        return _varint(value if value > _INT64_MAX else _zigzag(value))
    return _delimited(len(value.encode() if kind is str else value))


def _value_size(value: object, allowed: tuple[type, ...]) -> int:
    """Bytes of a RecordValue message holding `value`."""
    for kind in allowed:
        if isinstance(value, kind):
            return _SCALAR_TAG + _scalar(value, kind)
        if isinstance(value, list) and all(isinstance(v, kind) for v in value):
            if kind in (str, bytes):  # repeated, one tagged field per element
                inner = sum(1 + _scalar(v, kind) for v in value)
            elif kind is int and any(v > _INT64_MAX for v in value):  # a UintList: plain varints
                inner = 1 + _delimited(sum(_varint(v) for v in value))
            else:  # packed: one tagged field holding every element
                inner = 1 + _delimited(sum(_scalar(v, kind) for v in value)) if value else 0
            return _LIST_TAG + _delimited(inner)
    raise NotCarried(f"a record cannot carry {type(value).__name__} values")


def _proto_record_size(record: Mapping, allowed: tuple[type, ...]) -> int:
    """Bytes of `ConfigRecord{repeated Item{string key=1; value=2} items=1}` (or MetricRecord's)."""
    total = 0
    for name, value in record.items():
        key = len(name.encode())
        item = (1 + _delimited(key) if key else 0) + 1 + _delimited(_value_size(value, allowed))
        total += 1 + _delimited(item)
    return total
