"""A client state's bytes, as both client-state stores keep it.

One version: 8 bytes (little-endian length of the header), a JSON header
("record/name" -> dtype, shape, stype, start, end of its bytes) and the
arrays' serialised bytes one after another. Each array goes as its
serialised bytes with its dtype, shape and stype beside them, so that
neither side re-encodes it.
"""

from __future__ import annotations

import json
from typing import Callable

from prunus.common.params import record_of
from prunus.common.payload import Content, NpyArray


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
    (each array's bytes read straight into its own bytes object); ValueError
    naming `source` if they end early. With `only`, just those records:
    the others' bytes are passed over with `skip(n)` (an evaluation reads the
    user vectors, not a model's worth of residual)."""
    head = read(int.from_bytes(read(8), "little"))
    try:
        meta = json.loads(head)
    except ValueError:
        raise ValueError(f"client state {source} has a damaged header") from None
    records: dict[str, dict[str, NpyArray]] = {}
    for key, (dtype, shape, stype, start, end) in sorted(meta.items(), key=lambda item: item[1][3]):
        record, name = key.split("/", 1)
        if only is not None and record not in only:
            (skip or read)(end - start)
            continue
        data = read(end - start)
        if len(data) != end - start:
            raise ValueError(f"client state {source} is truncated: {key!r} needs {end - start} bytes, "
                             f"{len(data)} follow")
        records.setdefault(record, {})[name] = NpyArray(str(dtype), tuple(int(d) for d in shape), data,
                                                            str(stype))
    return Content({record: record_of(arrays) for record, arrays in records.items()})
