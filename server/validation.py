"""Check a client's reply before it touches the global model.

A reply that is malformed (missing records, wrong names, shapes or dtypes,
non-finite values, a bad example count) is rejected with its reason; the
round goes on with the others.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from common.params import Params, from_record


class ReplyError(ValueError):
    """A client reply that cannot be aggregated; the message says why."""


def validate_train_reply(content: RecordDict, expected: Params) -> tuple[Params, float, int]:
    """Return `(delta, num_examples, partition_id)` or raise ReplyError."""
    arrays = content.get("arrays")
    metrics = content.get("metrics")
    if not isinstance(arrays, ArrayRecord):
        raise ReplyError("reply has no ArrayRecord 'arrays'")
    if not isinstance(metrics, MetricRecord):
        raise ReplyError("reply has no MetricRecord 'metrics'")
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise ReplyError(f"reply arrays do not match the model: missing {missing}, unexpected {extra}")
    try:
        delta = from_record(arrays)
    except Exception as err:  # noqa: BLE001 - any decoding failure is a bad reply
        raise ReplyError(f"reply arrays cannot be decoded: {err}") from None
    for name, value in delta.items():
        if value.shape != expected[name].shape or value.dtype != np.float32:
            raise ReplyError(
                f"array {name!r}: expected float32 {expected[name].shape}, got {value.dtype} {value.shape}"
            )
        if not np.isfinite(value).all():
            raise ReplyError(f"array {name!r} has non-finite values")
    num_examples = metrics.get("num-examples")
    if not isinstance(num_examples, (int, float)) or not math.isfinite(num_examples) or num_examples <= 0:
        raise ReplyError(f"num-examples must be a positive number, got {num_examples!r}")
    info = content.get("info")
    partition_id = int(info["partition-id"]) if info is not None and "partition-id" in info else -1
    return delta, float(num_examples), partition_id
