"""Check and decode a client's reply before it touches the global model.

A reply that is malformed (missing records, a payload the uplink method
cannot decode into an update of the model, a bad example count or loss,
evaluation metrics that are not the ones asked for) is rejected with its
reason; the round goes on with the others. The payload itself is the
uplink method's to check (`UplinkMethod.decode`, which raises `PayloadError`).

What a reply carries beside its payload (its metrics, where it ran) is
bounded before the payload is read (`check_beside`): no honest reply comes
near the limits, and one past them would only cost the server time and
memory (in the ledger, the logs, the checks that read it).
"""

from __future__ import annotations

import math

import numpy as np

from prunus.common.codec import CodecError, record_payload
from prunus.common.codec_rows import decode_row_set
from prunus.common.compression import PayloadError, RoundContext, UplinkMethod
from prunus.common.compression.base import RowIds
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap
from prunus.common.update import Update, sent_entries, touched_rows

Shapes = dict[str, tuple[int, ...]]


class ReplyError(ValueError):
    """A client reply that cannot be aggregated; the message says why."""


# beside its payload a reply carries its metrics (four numbers at most) and
# where it ran (partition, host, Ray node: short strings)
MAX_BESIDE = 2  # records beside the payload
MAX_FIELDS = 16  # entries of one of them, elements of one list value
MAX_VALUE_BYTES = 1024  # one str or bytes value (a host name has at most 253)


def check_beside(content: Content, payload: str | None) -> None:
    """ReplyError unless what `content` carries beside its `payload` record
    (None: it has none) is within the limits above: a few config or metric
    records of a few short values."""
    beside = [name for name in content if name != payload]
    if len(beside) > MAX_BESIDE:
        raise ReplyError(f"reply carries {len(beside)} records beside its payload, more than {MAX_BESIDE}")
    for name in beside:
        record = content[name]
        if not isinstance(record, (ConfigMap, MetricMap)):
            raise ReplyError(f"record {name!r} beside the payload is a {type(record).__name__}, not a config or "
                             "metric record")
        if len(record) > MAX_FIELDS:
            raise ReplyError(f"record {name!r} has {len(record)} entries, more than {MAX_FIELDS}")
        for key, value in record.items():
            if _value_size(value) > MAX_VALUE_BYTES or (isinstance(value, list) and len(value) > MAX_FIELDS):
                raise ReplyError(f"{name}/{key!r}: a value longer than {MAX_VALUE_BYTES} bytes or "
                                 f"{MAX_FIELDS} elements")


def _value_size(value: object) -> int:
    """Bytes of a str or bytes value, or of a list's longest one (0 for numbers)."""
    if isinstance(value, list):
        return max(map(_value_size, value), default=0)
    return len(value) if isinstance(value, (str, bytes)) else 0


def validate_train_reply(content: Content, shapes: Shapes, uplink: UplinkMethod,
                         ctx: RoundContext | None = None) -> tuple[Update, float, float]:
    """Return `(update, num_examples, train_loss)` or raise ReplyError; the
    loss is NaN when the reply reports none."""
    check_beside(content, "arrays")
    arrays = content.get("arrays")
    metrics = _metrics(content)
    if not isinstance(arrays, Arrays):
        raise ReplyError("reply has no Arrays 'arrays'")
    try:
        update = uplink.decode(arrays, shapes, ctx)
    except PayloadError as err:
        raise ReplyError(str(err)) from None
    num_examples = _num_examples(metrics, allow_zero=True)
    if num_examples == 0 and any(sent_entries(t) for t in update.values()):
        raise ReplyError("num-examples is 0 but the update is not empty")  # 0: nothing to train on this round
    loss = metrics.get("train-loss", math.nan)
    if "train-loss" in metrics and not _finite_number(loss):
        raise ReplyError(f"train-loss must be a finite number, got {loss!r}")
    return update, num_examples, float(loss)


def check_rows(update: Update, rows: RowIds | None) -> None:
    """A client sent only some item rows may update only those rows."""
    for name, ids in (rows or {}).items():
        outside = np.setdiff1d(touched_rows(update[name]), ids, assume_unique=True)
        if len(outside):
            raise ReplyError(f"update of {name!r} touches {len(outside)} rows the client was not sent (e.g. {outside[0]})")


def validate_row_request(content: Content, n_items: int) -> np.ndarray:
    """The item rows a row-query reply asks for: sorted unique ids in [0, n_items)."""
    check_beside(content, "rows")
    rows = content.get("rows")
    if not isinstance(rows, Arrays) or list(rows) != ["ids"]:
        raise ReplyError("reply has no Arrays 'rows' holding one array 'ids'")
    try:
        return decode_row_set(record_payload("ids", rows["ids"]), n_items)
    except CodecError as err:
        raise ReplyError(f"undecodable row request: {err}") from None


def validate_evaluate_reply(content: Content, names: set[str]) -> tuple[float, dict[str, float]]:
    """Return `(num_examples, metrics)` of a federated-evaluation reply: exactly
    the metrics `names`, each a number in [0, 1], or raise ReplyError."""
    check_beside(content, None)
    metrics = _metrics(content)
    num_examples = _num_examples(metrics, allow_zero=True)  # a client without held-out items
    values = {key: value for key, value in metrics.items() if key != "num-examples"}
    if set(values) != names:
        raise ReplyError(f"evaluation metrics must be {sorted(names)}, got {sorted(values)[:10]}")
    for key, value in values.items():
        if not _finite_number(value) or not 0 <= value <= 1:
            raise ReplyError(f"metric {key!r} must be a number in [0, 1], got {value!r}")
    return num_examples, {key: float(value) for key, value in values.items()}


def _metrics(content: Content) -> MetricMap:
    metrics = content.get("metrics")
    if not isinstance(metrics, MetricMap):
        raise ReplyError("reply has no MetricMap 'metrics'")
    return metrics


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num_examples(metrics: MetricMap, allow_zero: bool = False) -> float:
    num_examples = metrics.get("num-examples")
    if not _finite_number(num_examples) or num_examples < 0 or (num_examples == 0 and not allow_zero):
        raise ReplyError(f"num-examples must be a {'non-negative' if allow_zero else 'positive'} number, got {num_examples!r}")
    return float(num_examples)
