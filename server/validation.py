"""Check and decode a client's reply before it touches the global model.

A reply that is malformed (missing records, wrong names, shapes or dtypes,
non-finite values, an undecodable payload, a bad example count) is rejected
with its reason; the round goes on with the others. Every accepted update
comes out in one sparse form, whether it travelled dense or encoded.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from prunus.common.codec import CodecError, unpack_update
from prunus.common.params import from_record
from prunus.common.pruning import SparseUpdate

Shapes = dict[str, tuple[int, ...]]


class ReplyError(ValueError):
    """A client reply that cannot be aggregated; the message says why."""


def validate_train_reply(content: RecordDict, shapes: Shapes, dense: bool) -> tuple[SparseUpdate, float, int]:
    """Return `(sparse update, num_examples, partition_id)` or raise ReplyError."""
    arrays = content.get("arrays")
    metrics = content.get("metrics")
    if not isinstance(arrays, ArrayRecord):
        raise ReplyError("reply has no ArrayRecord 'arrays'")
    if not isinstance(metrics, MetricRecord):
        raise ReplyError("reply has no MetricRecord 'metrics'")
    if set(arrays) != set(shapes):
        missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
        raise ReplyError(f"reply arrays do not match the model: missing {missing}, unexpected {extra}")
    update = _dense_update(arrays, shapes) if dense else _encoded_update(arrays, shapes)
    num_examples = metrics.get("num-examples")
    if not isinstance(num_examples, (int, float)) or not math.isfinite(num_examples) or num_examples <= 0:
        raise ReplyError(f"num-examples must be a positive number, got {num_examples!r}")
    info = content.get("info")
    partition_id = int(info["partition-id"]) if info is not None and "partition-id" in info else -1
    return update, float(num_examples), partition_id


def _dense_update(arrays: ArrayRecord, shapes: Shapes) -> SparseUpdate:
    try:
        dense = from_record(arrays)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a bad reply
        raise ReplyError(f"reply arrays cannot be decoded: {err}") from None
    update: SparseUpdate = {}
    for name, value in dense.items():
        if value.shape != shapes[name] or value.dtype != np.float32:
            raise ReplyError(f"array {name!r}: expected float32 {shapes[name]}, got {value.dtype} {value.shape}")
        if not np.isfinite(value).all():
            raise ReplyError(f"array {name!r} has non-finite values")
        flat = value.ravel()
        indices = np.flatnonzero(flat)
        update[name] = (indices, flat[indices], value.shape)
    return update


def _encoded_update(arrays: ArrayRecord, shapes: Shapes) -> SparseUpdate:
    try:
        update = unpack_update(arrays)
    except CodecError as err:
        raise ReplyError(f"undecodable payload: {err}") from None
    for name, (_, _, shape) in update.items():
        if tuple(shape) != tuple(shapes[name]):
            raise ReplyError(f"tensor {name!r}: expected shape {shapes[name]}, got {shape}")
    return update
