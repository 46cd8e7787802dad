import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.params import to_record
from server.validation import ReplyError, validate_train_reply

EXPECTED = {"item": np.zeros((3, 2), np.float32), "bias": np.zeros(3, np.float32)}


def _reply(arrays=None, metrics=None, info=True):
    content = {}
    if arrays is not None:
        content["arrays"] = to_record(arrays) if isinstance(arrays, dict) else arrays
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)
    if info:
        content["info"] = ConfigRecord({"partition-id": 4})
    return RecordDict(content)


def test_good_reply_is_accepted():
    delta, n, pid = validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 5}), EXPECTED)
    assert (n, pid) == (5.0, 4) and set(delta) == set(EXPECTED)


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        (None, {"num-examples": 1}, "no ArrayRecord"),
        (dict(EXPECTED), None, "no MetricRecord"),
        ({"item": EXPECTED["item"]}, {"num-examples": 1}, "missing"),
        ({**EXPECTED, "user": np.zeros(2, np.float32)}, {"num-examples": 1}, "unexpected"),
        ({**EXPECTED, "item": np.zeros((4, 2), np.float32)}, {"num-examples": 1}, "expected float32"),
        ({**EXPECTED, "bias": np.zeros(3, np.float64)}, {"num-examples": 1}, "expected float32"),
        ({**EXPECTED, "bias": np.array([0, np.nan, 0], np.float32)}, {"num-examples": 1}, "non-finite"),
        (dict(EXPECTED), {"num-examples": 0}, "num-examples"),
        (dict(EXPECTED), {"loss": 1.0}, "num-examples"),
    ],
)
def test_malformed_replies_are_rejected_with_their_reason(arrays, metrics, reason):
    with pytest.raises(ReplyError, match=reason):
        validate_train_reply(_reply(arrays, metrics), EXPECTED)
