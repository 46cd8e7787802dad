"""The exact wire size of a message's content as Flower ships it, without hashing it.

Flower (1.41) ships each distinct object of a content once: the RecordDict,
its records, their Arrays and the Arrays' chunks. An object goes deflated: a
header `type<space>child ids<space>body length`, a NUL byte, then the body.
A child id is the SHA-256 digest of the child's deflated bytes, 64 hex
characters, and two objects are the same object when their ids are equal.

Computing those ids for every reply (hashing each array, then copying it
into its deflated form) cost the driver more than aggregating the replies.
Here the same sizes come from the objects' fields:

* every id has the same length, so a body's length does not depend on its
  children's ids (a placeholder of that length stands in for them);
* two objects are the same object exactly when their contents are equal,
  which is compared directly, and only among chunks of equal length.

It reads only what a message carries (data, dtype, shape, stype, record
entries), never ids or chunk lists an object may have cached: a client could
have set those. `tests/common/test_wire_size.py` checks the sizes against
Flower's own serialiser.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Hashable

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from prunus.common.flower_compat import CHUNK_BYTES, HEAD_BODY_DIVIDER, HEAD_VALUE_DIVIDER

ID_LENGTH = 64  # a SHA-256 hex digest
_PLACEHOLDER_ID = "0" * ID_LENGTH


def wire_sizes(content: RecordDict | ArrayRecord, part: ArrayRecord | None = None) -> tuple[int, int]:
    """Bytes Flower ships for `content`, and for the objects of `part` (an
    ArrayRecord inside it; 0 without one)."""
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
        type_name = type(obj).__qualname__
        if isinstance(obj, Array):
            data = memoryview(obj.data).cast("B")
            chunks = [self._chunk(data[start:start + CHUNK_BYTES], below) for start in range(0, len(data), CHUNK_BYTES)]
            unique = list(dict.fromkeys(chunks))
            body = json.dumps({"dtype": obj.dtype, "shape": obj.shape, "stype": obj.stype,
                               "arraychunk_ids": [unique.index(c) for c in chunks]}).encode()
            return self._add((type_name, body, tuple(unique)), _header(type_name, len(unique), len(body)) + len(body))
        if isinstance(obj, (ArrayRecord, RecordDict)):
            entries = tuple((name, self._walk(child, below)) for name, child in obj.items())
            body = len(json.dumps(dict.fromkeys(obj, _PLACEHOLDER_ID)).encode())
            unique = len({key for _, key in entries})
            return self._add((type_name, entries), _header(type_name, unique, body) + body)
        if isinstance(obj, (ConfigRecord, MetricRecord)):  # no children: Flower's own deflate, no hashing
            deflated = obj.deflate()
            return self._add((type_name, deflated), len(deflated))
        raise TypeError(f"a message cannot carry a {type_name}")

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
