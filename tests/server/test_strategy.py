"""The strategy on fabricated replies: rejection, ordering, ledger."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from prunus.common.codec import pack_update
from prunus.common.config import Config
from prunus.common.params import to_record, wire_bytes
from prunus.server.ledger import Ledger
from prunus.server.strategy import PrunusStrategy

PARAMS = {"item_embedding.weight": np.zeros((4, 2), np.float32), "item_bias.weight": np.zeros((4, 1), np.float32)}


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield


def _reply(node: int, partition: int, arrays: ArrayRecord, examples: int = 3, ray_node: str = "") -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    request.metadata.__dict__["_message_id"] = f"m{node}"
    info = {"partition-id": partition, "host": "h", **({"ray-node": ray_node} if ray_node else {})}
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": examples, "train-loss": 0.5}),
                          "info": ConfigRecord(info)})  # fmt: skip
    reply = Message(content, reply_to=request)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


def _strategy(params=PARAMS, **overrides) -> PrunusStrategy:
    cfg = Config.of(rounds=2, clients_per_round=3, **overrides)
    return PrunusStrategy(cfg, {0: 10, 1: 11, 2: 12}, {k: v.copy() for k, v in params.items()}, Ledger())


def _update(value: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, value) for k, v in PARAMS.items()}


def test_a_malformed_reply_is_rejected_and_the_round_goes_on():
    strategy = _strategy()
    bad = ArrayRecord({"item_embedding.weight": Array(np.zeros((9, 9), np.float32)), "item_bias.weight": Array(np.zeros((4, 1), np.float32))})
    replies = [_reply(10, 0, to_record(_update(1.0))), _reply(11, 1, bad), _reply(12, 2, to_record(_update(3.0)))]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(strategy.params["item_embedding.weight"], 2.0)  # mean of the two good ones
    entry = strategy.ledger.round(1)
    assert (entry.replies, entry.rejected, entry.failures) == (2, 1, 0)
    assert entry.uplink_bytes == sum(wire_bytes(r.content) for r in replies)


def test_every_reply_is_logged_with_its_client_and_ray_node():
    strategy = _strategy()
    bad = ArrayRecord({"item_embedding.weight": Array(np.zeros((9, 9), np.float32))})
    replies = [_reply(12, 2, to_record(_update(1.0)), ray_node="nodeB"), _reply(11, 1, bad, ray_node="nodeA"),
               _reply(10, 0, to_record(_update(1.0)), ray_node="nodeA")]  # fmt: skip
    strategy.aggregate_train(1, replies)
    rows = strategy.ledger.reply_rows()
    assert [(r["partition"], r["ray_node"], r["status"]) for r in rows] == [
        (0, "nodeA", "accepted"), (1, "nodeA", "rejected"), (2, "nodeB", "accepted")]  # fmt: skip
    assert sum(r["uplink_bytes"] for r in rows) == strategy.ledger.round(1).uplink_bytes
    assert rows[0]["uplink_nnz"] == 12 and rows[1]["uplink_nnz"] == 0
    assert strategy.ledger.placement() == {"ray_nodes": {"nodeA": 2, "nodeB": 1}, "hosts": {"h": 3}}


def test_reply_order_does_not_change_the_model():
    replies = [_reply(10 + p, p, to_record(_update(v))) for p, v in enumerate([0.1, 0.7, 0.3])]
    a, b = _strategy(), _strategy()
    a.aggregate_train(1, replies)
    b.aggregate_train(1, list(reversed(replies)))
    for name in PARAMS:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_encoded_replies_are_counted_against_their_dense_equivalent():
    big = {"item_embedding.weight": np.zeros((500, 8), np.float32), "item_bias.weight": np.zeros((500, 1), np.float32)}
    strategy = _strategy(big, prune_method="topk", density=0.01)
    tensors = {k: (np.array([0]), np.array([1.0], np.float32), v.shape) for k, v in big.items()}
    replies = [_reply(10, 0, pack_update(tensors))]
    strategy.aggregate_train(1, replies)
    entry = strategy.ledger.round(1)
    assert entry.rejected == 0 and entry.uplink_nnz == 2
    assert entry.dense_uplink_bytes > 10 * entry.uplink_bytes
    assert entry.dense_uplink_bytes - entry.uplink_bytes == wire_bytes(to_record(big)) - wire_bytes(replies[0].content["arrays"])


def test_sampling_depends_only_on_seed_and_round():
    a, b = _strategy(), _strategy()
    assert a.sample(3, 2, 0) == b.sample(3, 2, 0)
    assert sorted(a.sample(1, 3, 0)) == [10, 11, 12]


def test_broadcast_is_counted_with_its_non_zeros_and_dense_equivalent():
    strategy = _strategy(downlink_codec="fp16")
    strategy.params["item_embedding.weight"][0] = 1.0
    messages = list(strategy.configure_train(1, to_record(strategy.params), ConfigRecord(), grid=None))
    entry = strategy.ledger.round(1)
    assert len(messages) == 3 and entry.clients == 3
    assert entry.downlink_nnz == 3 * 2
    assert entry.downlink_bytes == sum(wire_bytes(m.content) for m in messages)
    assert entry.dense_downlink_bytes > 0
