"""Check and decode a client's reply before it touches the global model.

A reply that is malformed (missing records, a payload the uplink method
cannot decode into an update of the model, a bad example count) is rejected
with its reason; the round goes on with the others. The payload itself is the
uplink method's to check (`UplinkMethod.decode`, which raises `PayloadError`).
"""

from __future__ import annotations

import math

from flwr.app import ArrayRecord, MetricRecord, RecordDict

from prunus.common.compression import PayloadError, UplinkMethod
from prunus.common.update import Update

Shapes = dict[str, tuple[int, ...]]


class ReplyError(ValueError):
    """A client reply that cannot be aggregated; the message says why."""


def validate_train_reply(content: RecordDict, shapes: Shapes, uplink: UplinkMethod) -> tuple[Update, float]:
    """Return `(update, num_examples)` or raise ReplyError."""
    arrays = content.get("arrays")
    metrics = content.get("metrics")
    if not isinstance(arrays, ArrayRecord):
        raise ReplyError("reply has no ArrayRecord 'arrays'")
    if not isinstance(metrics, MetricRecord):
        raise ReplyError("reply has no MetricRecord 'metrics'")
    try:
        update = uplink.decode(arrays, shapes)
    except PayloadError as err:
        raise ReplyError(str(err)) from None
    num_examples = metrics.get("num-examples")
    if not isinstance(num_examples, (int, float)) or not math.isfinite(num_examples) or num_examples <= 0:
        raise ReplyError(f"num-examples must be a positive number, got {num_examples!r}")
    return update, float(num_examples)
