import math

import numpy as np
import pytest

from prunus.common.codec import pack_update
from prunus.common.compression import UPLINK, RoundContext, make
from prunus.common.config import Config
from prunus.common.params import npy_array, to_record
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap
from prunus.common.pruning import quantise
from prunus.common.update import Dense, Factored, Sparse, densify, sent_entries
from prunus.server.validation import ReplyError, validate_evaluate_reply, validate_train_reply

EXPECTED = {"item": np.zeros((3, 2), np.float32), "bias": np.zeros(3, np.float32)}
SHAPES = {name: value.shape for name, value in EXPECTED.items()}
DENSE = UPLINK.get("none")(Config.of().compression)  # the FedAvg baseline: plain float32 arrays
ENCODED = UPLINK.get("topk")(Config.of(prune_method="topk", density=0.5).compression)  # codec payloads


def _reply(arrays=None, metrics=None, info=True):
    content = {}
    if arrays is not None:
        content["arrays"] = arrays if isinstance(arrays, Arrays) else to_record(arrays)
    if metrics is not None:
        content["metrics"] = MetricMap(metrics)
    if info:
        content["info"] = ConfigMap({"partition-id": 4})
    return Content(content)


def test_good_reply_is_accepted():
    arrays = {"item": np.arange(6, dtype=np.float32).reshape(3, 2), "bias": np.zeros(3, np.float32)}
    update, n, _ = validate_train_reply(_reply(arrays, {"num-examples": 5}), SHAPES, DENSE)
    assert n == 5.0 and set(update) == set(EXPECTED)
    assert all(isinstance(t, Dense) for t in update.values())
    np.testing.assert_array_equal(update["item"].values, arrays["item"])


def test_the_reply_needs_no_info_record():
    """Who sent a reply is the transport's to say, not the reply's."""
    update, n, _ = validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 2.5}, info=False), SHAPES, DENSE)
    assert n == 2.5 and set(update) == set(EXPECTED)


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        (None, {"num-examples": 1}, "no Arrays"),
        (dict(EXPECTED), None, "no MetricMap"),
        ({"item": EXPECTED["item"]}, {"num-examples": 1}, "missing"),
        ({**EXPECTED, "user": np.zeros(2, np.float32)}, {"num-examples": 1}, "unexpected"),
        ({**EXPECTED, "item": np.zeros((4, 2), np.float32)}, {"num-examples": 1}, "expected float32"),
        ({**EXPECTED, "bias": np.zeros(3, np.float64)}, {"num-examples": 1}, "expected float32"),
        ({**EXPECTED, "bias": np.array([0, np.nan, 0], np.float32)}, {"num-examples": 1}, "non-finite"),
        ({**EXPECTED, "bias": np.array([0, np.inf, 0], np.float32)}, {"num-examples": 1}, "non-finite"),
        ({**EXPECTED, "bias": np.ones(3, np.float32)}, {"num-examples": 0}, "num-examples is 0 but"),
        (dict(EXPECTED), {"num-examples": -2.0}, "num-examples"),
        (dict(EXPECTED), {"num-examples": float("nan")}, "num-examples"),
        (dict(EXPECTED), {"loss": 1.0}, "num-examples"),
    ],
)
def test_malformed_replies_are_rejected_with_their_reason(arrays, metrics, reason):
    with pytest.raises(ReplyError, match=reason):
        validate_train_reply(_reply(arrays, metrics), SHAPES, DENSE)


def test_a_client_with_nothing_to_train_on_replies_an_empty_update():
    """Sent rows none of its items are among (a bandit round): zero examples, nothing sent."""
    update, n, loss = validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 0}), SHAPES, DENSE)
    assert n == 0 and not any(sent_entries(t) for t in update.values()) and np.isnan(loss)


def _encoded(tensors):
    return pack_update(tensors, value_codec="fp16")


TENSORS = {"item": (np.array([1, 4]), np.array([0.5, -1.0], np.float32), (3, 2)),
           "bias": (np.array([2]), np.array([2.0], np.float32), (3,))}  # fmt: skip


def test_encoded_reply_decodes_to_its_sparse_update():
    update, n, _ = validate_train_reply(_reply(_encoded(TENSORS), {"num-examples": 2}), SHAPES, ENCODED)
    assert n == 2.0 and isinstance(update["item"], Sparse)
    assert update["item"].indices.tolist() == [1, 4] and update["item"].values.tolist() == [0.5, -1.0]
    assert tuple(update["bias"].shape) == (3,)


def test_corrupted_or_misshapen_payloads_are_rejected():
    record = _encoded(TENSORS)
    raw = bytearray(record["item"].numpy().tobytes())
    record["item"] = npy_array(np.frombuffer(bytes(raw[:-3]), dtype=np.uint8))
    with pytest.raises(ReplyError, match="undecodable"):
        validate_train_reply(_reply(record, {"num-examples": 2}), SHAPES, ENCODED)
    wrong = _encoded({**TENSORS, "bias": (np.array([2]), np.array([2.0], np.float32), (4,))})
    with pytest.raises(ReplyError, match="expected shape"):
        validate_train_reply(_reply(wrong, {"num-examples": 2}), SHAPES, ENCODED)
    with pytest.raises(ReplyError, match="not a 1-D uint8"):
        validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 2}), SHAPES, ENCODED)  # dense arrays where encoded ones belong
    missing = _encoded({"item": TENSORS["item"]})
    with pytest.raises(ReplyError, match="missing"):
        validate_train_reply(_reply(missing, {"num-examples": 2}), SHAPES, ENCODED)


def test_encoded_payloads_are_rejected_where_plain_arrays_belong():
    with pytest.raises(ReplyError, match="expected float32"):
        validate_train_reply(_reply(_encoded(TENSORS), {"num-examples": 2}), SHAPES, DENSE)


@pytest.mark.parametrize("method", UPLINK.names())
@pytest.mark.parametrize("value_codec", ["fp32", "fp16"])
def test_every_uplink_method_accepts_what_its_client_half_sends(method, value_codec):
    uplink = make(UPLINK, method, Config.of(prune_method=method, density=0.5, value_codec=value_codec))
    rng = np.random.default_rng(0)
    delta = {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}
    ctx = RoundContext(server_round=1, partition_id=4, seed=0)
    encoded = uplink.encode(delta, None, ctx)
    update, n, _ = validate_train_reply(_reply(encoded.record, {"num-examples": 3}), SHAPES, uplink, ctx)
    assert n == 3.0 and set(update) == set(SHAPES)
    got = densify(update)
    assert sum(sent_entries(t) for t in update.values()) == encoded.nnz
    # what arrives is what was sent: kept entries of the update, as the method's
    # value codec quantised them (a method may fix its own codec, as signsgd does)
    codec = getattr(getattr(uplink, "spec", None), "value_codec", value_codec)
    for name, shape in SHAPES.items():
        assert got[name].shape == shape
        if isinstance(update[name], Factored):  # a projection, not entries of the update
            continue
        sent = got[name] != 0
        np.testing.assert_array_equal(got[name][sent], quantise(delta[name][sent], codec))


@pytest.mark.parametrize("loss", [[1.0], [], float("nan"), float("inf"), -float("inf")])
def test_a_bad_train_loss_is_rejected_not_raised_later(loss):
    """A MetricMap may hold lists and non-finite floats; a loss must be one finite number."""
    with pytest.raises(ReplyError, match="train-loss"):
        validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 2, "train-loss": loss}), SHAPES, DENSE)


def test_a_missing_train_loss_is_nan():
    assert math.isnan(validate_train_reply(_reply(dict(EXPECTED), {"num-examples": 2}), SHAPES, DENSE)[2])


NAMES = {"hr@10", "ndcg@10"}


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"hr@10": 0.5, "ndcg@10": 0.3}, "num-examples"),
        ({"num-examples": 2, "hr@10": 0.5}, "evaluation metrics must be"),
        ({"num-examples": 2, "hr@10": 0.5, "ndcg@10": 0.3, "extra": 1.0}, "evaluation metrics must be"),
        ({"num-examples": 2, "hr@10": 1.5, "ndcg@10": 0.3}, "in \\[0, 1\\]"),
        ({"num-examples": 2, "hr@10": [0.5], "ndcg@10": 0.3}, "in \\[0, 1\\]"),
        ({"num-examples": 2, "hr@10": float("nan"), "ndcg@10": 0.3}, "in \\[0, 1\\]"),
        ({"num-examples": 1e400, "hr@10": 0.5, "ndcg@10": 0.3}, "num-examples"),
        ({"num-examples": -1, "hr@10": 0.5, "ndcg@10": 0.3}, "num-examples"),
    ],
)
def test_malformed_evaluation_replies_are_rejected_with_their_reason(metrics, reason):
    with pytest.raises(ReplyError, match=reason):
        validate_evaluate_reply(Content({"metrics": MetricMap(metrics)}), NAMES)


def test_a_good_evaluation_reply_is_accepted_and_zero_examples_allowed():
    n, metrics = validate_evaluate_reply(Content({"metrics": MetricMap({"num-examples": 0, "hr@10": 1, "ndcg@10": 0.5})}), NAMES)
    assert (n, metrics) == (0.0, {"hr@10": 1.0, "ndcg@10": 0.5})


TRAIN_METRICS = {"num-examples": 5, "train-loss": 0.5, "nnz": 12, "density": 0.05}
INFO = {"partition-id": 4, "host": "h" * 253, "ray-node": "a" * 56}
BESIDE = {
    "two more records": {"extra": ConfigMap({"x": 1}), "more": MetricMap({"y": 1.0})},
    "arrays beside the payload": {"extra": Arrays({"x": npy_array(np.zeros(3, np.float32))})},
    "17 metrics": {"metrics": MetricMap({**TRAIN_METRICS, **{f"m{i}": 1.0 for i in range(13)}})},
    "a long host name": {"info": ConfigMap({**INFO, "host": "h" * 1025})},
    "long bytes in a list": {"info": ConfigMap({**INFO, "ray-node": [b"x" * 2000]})},
    "a long list": {"info": ConfigMap({**INFO, "ray-node": list(range(17))})},
    "info of another kind": {"info": Arrays()},
}


@pytest.mark.parametrize("extra", BESIDE.values(), ids=list(BESIDE))
def test_what_a_reply_carries_beside_its_payload_is_bounded_before_the_payload_is_read(extra, monkeypatch):
    """Thousands of metrics, a host name of a megabyte, a 4 MB array beside the
    payload: each was accepted (and carried into the ledger and logs); now each
    is rejected before the payload is decoded, for every kind of reply."""
    from prunus.common.codec_rows import encode_row_set
    from prunus.server.validation import validate_row_request

    arrays = {"item": np.arange(6, dtype=np.float32).reshape(3, 2), "bias": np.zeros(3, np.float32)}
    honest = Content({"arrays": to_record(arrays), "metrics": MetricMap(TRAIN_METRICS), "info": ConfigMap(INFO)})
    validate_train_reply(honest, SHAPES, DENSE)
    monkeypatch.setattr(DENSE, "decode", lambda *args: pytest.fail("the payload was read"))
    with pytest.raises(ReplyError, match="beside|entries|longer than|records"):
        validate_train_reply(Content({**honest, **extra}), SHAPES, DENSE)
    rows = Content({"rows": Arrays({"ids": npy_array(np.frombuffer(encode_row_set(np.array([1, 2]), 3), np.uint8))}),
                    "info": ConfigMap(INFO)})
    assert list(validate_row_request(rows, 3)) == [1, 2]
    with pytest.raises(ReplyError, match="beside|entries|longer than|records"):
        validate_row_request(Content({**rows, **extra}), 3)
    evaluation = Content({"metrics": MetricMap({"num-examples": 2, "hr@10": 0.5, "ndcg@10": 0.3}),
                          "info": ConfigMap(INFO)})
    validate_evaluate_reply(evaluation, NAMES)
    if "metrics" not in extra:  # (17 metrics in an evaluation reply: the wrong names, rejected too)
        with pytest.raises(ReplyError, match="beside|entries|longer than|records"):
            validate_evaluate_reply(Content({**evaluation, **extra}), NAMES)
