import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from prunus.common.codec import pack_update
from prunus.common.params import to_record
from prunus.server.validation import ReplyError, validate_train_reply

EXPECTED = {"item": np.zeros((3, 2), np.float32), "bias": np.zeros(3, np.float32)}
SHAPES = {name: value.shape for name, value in EXPECTED.items()}


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
    delta, n, pid = validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 5}), SHAPES, dense=True)
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
        validate_train_reply(_reply(arrays, metrics), SHAPES, dense=True)


def _encoded(tensors):
    return pack_update(tensors, value_codec="fp16")


def test_encoded_reply_decodes_to_its_sparse_update():
    tensors = {"item": (np.array([1, 4]), np.array([0.5, -1.0], np.float32), (3, 2)), "bias": (np.array([2]), np.array([2.0], np.float32), (3,))}
    update, _, _ = validate_train_reply(_reply(_encoded(tensors), {"num-examples": 2}), SHAPES, dense=False)
    assert update["item"][0].tolist() == [1, 4] and update["item"][1].tolist() == [0.5, -1.0]


def test_corrupted_or_misshapen_payloads_are_rejected():
    tensors = {"item": (np.array([1, 4]), np.array([0.5, -1.0], np.float32), (3, 2)), "bias": (np.array([2]), np.array([2.0], np.float32), (3,))}
    record = _encoded(tensors)
    raw = bytearray(record["item"].numpy().tobytes())
    record["item"] = Array(np.frombuffer(bytes(raw[:-3]), dtype=np.uint8))
    with pytest.raises(ReplyError, match="undecodable"):
        validate_train_reply(_reply(record, {"num-examples": 2}), SHAPES, dense=False)
    wrong = _encoded({**tensors, "bias": (np.array([2]), np.array([2.0], np.float32), (4,))})
    with pytest.raises(ReplyError, match="expected shape"):
        validate_train_reply(_reply(wrong, {"num-examples": 2}), SHAPES, dense=False)
    with pytest.raises(ReplyError, match="not a 1-D uint8"):
        validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 2}), SHAPES, dense=False)  # dense arrays where encoded ones belong
