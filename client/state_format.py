"""A client state's bytes, as both client-state stores keep it.

One version: 8 bytes (little-endian length of the header), a JSON header
("record/name" -> dtype, shape, stype, start, end of its bytes) and the
arrays' serialised bytes one after another. Each array goes as its
serialised bytes with its dtype, shape and stype beside them, so that
neither side re-encodes it.

Reading trusts nothing in the bytes: a store's files (or shared memory) are
outside the client's process, so a damaged or planted state must be one
client's error (`StateError`, naming what is wrong), never a crash or an
allocation the header asks for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from prunus.common.params import record_of
from prunus.common.payload import Content, NpyArray

# a state's header names a few arrays per record: a longer one is damaged
MAX_HEADER = 1 << 20


class StateError(ValueError):
    """A client state no honest run leaves (damaged or planted): the message
    that read it fails with this, and the run goes on without that reply."""


@dataclass(frozen=True)
class _Entry:
    record: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    stype: str
    length: int


def pack(state: Content) -> tuple[bytes, list[bytes]]:
    """(the header's length and the header, the Arrays' bytes in order)."""
    arrays = {f"{record}/{name}": array for record in state for name, array in state[record].items()}
    meta, offset = {}, 0
    for key, a in arrays.items():
        meta[key] = [a.dtype, list(a.shape), a.stype, offset, offset + len(a.data)]
        offset += len(a.data)
    head = json.dumps(meta).encode()
    return len(head).to_bytes(8, "little") + head, [a.data for a in arrays.values()]


def unpack(read: Callable[[int], bytes], source: str, skip: Callable[[int], None] | None = None,
           only: tuple[str, ...] | None = None) -> Content:
    """The state whose bytes `read(n)` gives, n at a time from the start
    (each array's bytes read straight into its own bytes object);
    `StateError` naming `source` if they end early or the header is not one
    `pack` writes. With `only`, just those records: the others' bytes are
    passed over with `skip(n)` (an evaluation reads the user vectors, not a
    model's worth of residual)."""
    prefix = read(8)
    size = int.from_bytes(prefix, "little")
    if len(prefix) != 8 or size > MAX_HEADER:
        raise StateError(f"client state {source} has a damaged header: " + (
            f"{len(prefix)} of its 8 length bytes" if len(prefix) != 8 else f"it claims {size:,} bytes"))
    head = read(size)
    if len(head) != size:
        raise StateError(f"client state {source} is truncated: its header needs {size} bytes, {len(head)} follow")
    records: dict[str, dict[str, NpyArray]] = {}
    for entry in _entries(head, source):
        if only is not None and entry.record not in only:
            (skip or read)(entry.length)
            continue
        data = read(entry.length)
        if len(data) != entry.length:
            raise StateError(f"client state {source} is truncated: {entry.record + '/' + entry.name!r} needs "
                             f"{entry.length} bytes, {len(data)} follow")
        records.setdefault(entry.record, {})[entry.name] = NpyArray(entry.dtype, entry.shape, data, entry.stype)
    return Content({record: record_of(arrays) for record, arrays in records.items()})


def _entries(head: bytes, source: str) -> list[_Entry]:
    """The header's arrays in the order of their bytes, checked to be laid
    out as `pack` lays them out: one after another from the header on."""
    try:
        meta = json.loads(head)
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        fields = sorted(((key, *_fields(key, value)) for key, value in meta.items()), key=lambda item: item[4])
        entries, at = [], 0
        for key, dtype, shape, stype, start, end in fields:
            if start != at or end < start:
                raise ValueError(f"{key!r} spans bytes {start} to {end}; the arrays before it end at {at}")
            record, name = key.split("/", 1)
            entries.append(_Entry(record, name, dtype, shape, stype, end - start))
            at = end
    except ValueError as err:
        raise StateError(f"client state {source} has a damaged header: {err}") from None
    return entries


def _fields(key: Any, value: Any) -> tuple[str, tuple[int, ...], str, int, int]:
    """(dtype, shape, stype, start, end) of one header entry, or ValueError."""
    if "/" not in key or not all(key.split("/", 1)):
        raise ValueError(f"{key!r} is not 'record/name'")
    if not (isinstance(value, list) and len(value) == 5):
        raise ValueError(f"{key!r}: {value!r} is not [dtype, shape, stype, start, end]")
    dtype, shape, stype, start, end = value
    numbers = [start, end, *shape] if isinstance(shape, list) else None
    if not (isinstance(dtype, str) and isinstance(stype, str) and numbers is not None
            and all(type(n) is int and n >= 0 for n in numbers)):
        raise ValueError(f"{key!r}: {value!r} is not [dtype, shape, stype, start, end]")
    return dtype, tuple(shape), stype, start, end
