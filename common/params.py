"""Shared parameters as named numpy arrays, and their Flower `ArrayRecord` form."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from prunus.common.flower_compat import nested_objects

Params = dict[str, np.ndarray]


def to_record(params: Params) -> ArrayRecord:
    """Pack named float32 arrays into an ArrayRecord (Flower serialises it)."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in params.items()})


def from_record(record: ArrayRecord) -> Params:
    """Unpack an ArrayRecord into named numpy arrays."""
    return {name: array.numpy() for name, array in record.items()}


def wire_bytes(content: RecordDict | ArrayRecord) -> int:
    """Serialised size in bytes, the way Flower ships a message between
    SuperLink and SuperNode: every distinct object of the content (records,
    arrays, chunks) deflated to its wire bytes."""
    return wire_bytes_with_part(content, None)[0]


def wire_bytes_with_part(content: RecordDict | ArrayRecord, part: ArrayRecord | None) -> tuple[int, int]:
    """`wire_bytes` of the content and of one record inside it, each object
    deflated once (the server counts both for every reply)."""
    sizes = {oid: len(obj.deflate()) for oid, obj in nested_objects(content).items()}
    part_ids = nested_objects(part).keys() if part is not None else ()
    return sum(sizes.values()), sum(sizes[oid] for oid in part_ids)
