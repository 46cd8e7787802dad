"""The federation engine through an in-memory transport: sampling, rejection,
ordering, failures, the byte ledger and federated evaluation."""

from collections.abc import Callable

import numpy as np
import pytest

from prunus.common.codec import pack_update
from prunus.common.codec_rows import encode_row_set
from prunus.common.compression import DOWNLINK
from prunus.common.compression.base import ROW_QUERY
from prunus.common.config import REPLY_DEFENCES, Config
from prunus.common.models import ModelSpec
from prunus.common.params import npy_array, to_record, wire_bytes
from prunus.common.payload import Arrays, ConfigMap, Content, MessageType, MetricMap
from prunus.common.update import Sparse
from prunus.server.federation import EVAL_STREAM, TRAIN_STREAM, Federation
from prunus.server.ledger import Ledger
from prunus.server.transport import Outgoing, Reply

UNDEFENDED = dict.fromkeys(REPLY_DEFENCES, 0.0)  # the server's reply defences off

PARAMS = {"item_embedding.weight": np.zeros((4, 2), np.float32), "item_bias.weight": np.zeros((4, 1), np.float32)}
SPEC = ModelSpec({k: v.shape for k, v in PARAMS.items()}, ("item_embedding.weight",), tuple(PARAMS))
NODE = {0: 10, 1: 11, 2: 12}  # partition -> node id, as a transport would attribute replies


class FakeTransport:
    """Calls `answer(message_type, outgoing)` per message: the reply content (None:
    the client failed), attributed to the partition the message went to. Keeps
    what was sent; with `reverse` the replies come back last-first."""

    def __init__(self, answer: Callable[[str, Outgoing], Content | None], reverse: bool = False) -> None:
        self.answer, self.reverse = answer, reverse
        self.sent: list[tuple[str, list[Outgoing]]] = []

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]:
        self.sent.append((message_type, list(messages)))
        replies = []
        for outgoing in messages:
            content = self.answer(message_type, outgoing)
            node = NODE.get(outgoing.partition, 100 + outgoing.partition)
            replies.append(Reply(outgoing.partition, node, content, "" if content is not None else "client failed"))
        return replies[::-1] if self.reverse else replies


class CannedTransport:
    """Returns these replies to every exchange, whatever was sent (in their order)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, list[Outgoing]]] = []

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]:
        self.sent.append((message_type, list(messages)))
        return list(self.replies)


def _federation(params=PARAMS, partitions=(0, 1, 2), evaluator=lambda params, server_round: {}, **overrides) -> Federation:
    cfg = Config.of(**{"rounds": 2, "clients_per_round": 3, **overrides})
    return Federation(cfg, list(partitions), {k: v.copy() for k, v in params.items()}, SPEC, evaluator, Ledger())


def _update(value: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, value) for k, v in PARAMS.items()}


def _reply(partition: int, content: Content | None) -> Reply:
    return Reply(partition, NODE[partition], content, "" if content is not None else "worker died")


BAD = Arrays({"item_embedding.weight": npy_array(np.zeros((9, 9), np.float32)),
                   "item_bias.weight": npy_array(np.zeros((4, 1), np.float32))})  # fmt: skip


def test_a_malformed_reply_is_rejected_and_the_round_goes_on(make_train_reply):
    federation = _federation()
    replies = [_reply(0, make_train_reply(_update(1.0), partition=0)), _reply(1, make_train_reply(BAD, partition=1)),
               _reply(2, make_train_reply(_update(3.0), partition=2))]  # fmt: skip
    federation.train(1, CannedTransport(replies))
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 2.0)  # mean of the two good ones
    np.testing.assert_allclose(federation.params["item_bias.weight"], 2.0)
    entry = federation.ledger.round(1)
    assert (entry.clients, entry.replies, entry.rejected, entry.failures) == (3, 2, 1, 0)
    assert entry.uplink_bytes == sum(wire_bytes(r.content) for r in replies)
    assert entry.train_loss == pytest.approx(0.5)


@pytest.mark.parametrize("arrays", [
    Arrays({"item_embedding.weight": npy_array(np.zeros((4, 2), np.float32))}),  # a tensor missing
    Arrays({**{k: npy_array(v) for k, v in PARAMS.items()}, "user_embedding.weight": npy_array(np.zeros((1, 2), np.float32))}),
    Arrays({k: npy_array(v.astype(np.float64)) for k, v in PARAMS.items()}),  # wrong dtype
    Arrays({k: npy_array(np.full_like(v, np.nan)) for k, v in PARAMS.items()}),  # non-finite
])
def test_every_kind_of_malformed_reply_is_rejected_not_raised(make_train_reply, arrays):
    federation = _federation()
    replies = [_reply(0, make_train_reply(arrays)), _reply(1, make_train_reply(_update(1.0)))]
    federation.train(1, CannedTransport(replies))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.rejected) == (1, 1)
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 1.0)


@pytest.mark.parametrize("metrics", [{"num-examples": 0, "train-loss": 0.5}, {"train-loss": 0.5}])
def test_a_reply_with_a_bad_example_count_is_rejected(make_train_reply, metrics):
    federation = _federation()
    bad = make_train_reply(_update(5.0))
    bad["metrics"] = MetricMap(metrics)
    federation.train(1, CannedTransport([_reply(0, bad), _reply(1, make_train_reply(_update(1.0)))]))
    assert federation.ledger.round(1).rejected == 1
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 1.0)


def test_every_reply_is_logged_with_its_client_and_ray_node(make_train_reply):
    federation = _federation()
    bad = Arrays({"item_embedding.weight": npy_array(np.zeros((9, 9), np.float32))})
    replies = [_reply(2, make_train_reply(_update(1.0), partition=2, ray_node="nodeB")),
               _reply(1, make_train_reply(bad, partition=1, ray_node="nodeA")),
               _reply(0, make_train_reply(_update(1.0), partition=0, ray_node="nodeA"))]  # fmt: skip
    federation.train(1, CannedTransport(replies))
    rows = federation.ledger.reply_rows()
    assert [(r["partition"], r["node"], r["ray_node"], r["host"], r["status"]) for r in rows] == [
        (0, 10, "nodeA", "h", "accepted"), (1, 11, "nodeA", "h", "rejected"), (2, 12, "nodeB", "h", "accepted")]  # fmt: skip
    assert all(r["kind"] == "train" and r["round"] == 1 for r in rows)
    assert sum(r["uplink_bytes"] for r in rows) == federation.ledger.round(1).uplink_bytes
    assert all(r["uplink_bytes"] > 0 for r in rows)
    assert rows[0]["uplink_nnz"] == 12 and rows[1]["uplink_nnz"] == 0
    assert federation.ledger.round(1).uplink_nnz == 24
    assert federation.ledger.placement() == {"ray_nodes": {"nodeA": 2, "nodeB": 1}, "hosts": {"h": 3}}


def test_a_reply_is_attributed_by_the_transport_not_by_what_it_claims(make_train_reply):
    """A reply's info may name any partition; the ledger and the aggregation
    order use the partition the transport sent the message to."""
    federation = _federation()
    federation.train(1, CannedTransport([_reply(1, make_train_reply(_update(1.0), partition=7))]))
    (row,) = federation.ledger.reply_rows()
    assert (row["partition"], row["node"], row["status"]) == (1, 11, "accepted")


def test_a_failed_reply_counts_as_a_failure(make_train_reply):
    federation = _federation()
    replies = [_reply(0, make_train_reply(_update(1.0))), _reply(1, None), _reply(2, make_train_reply(_update(3.0)))]
    federation.train(1, CannedTransport(replies))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.rejected, entry.failures) == (2, 0, 1)
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 2.0)
    assert entry.uplink_bytes == sum(wire_bytes(r.content) for r in replies if r.content is not None)
    rows = federation.ledger.reply_rows()
    assert [(r["partition"], r["status"]) for r in rows] == [(0, "accepted"), (1, "failed"), (2, "accepted")]
    assert (rows[1]["uplink_bytes"], rows[1]["uplink_nnz"], rows[1]["host"], rows[1]["ray_node"]) == (0, 0, "", "")


def test_a_round_without_usable_replies_leaves_the_model_unchanged(make_train_reply):
    federation = _federation()
    federation.params["item_embedding.weight"][0] = 1.0
    before = {k: v.copy() for k, v in federation.params.items()}
    federation.train(1, CannedTransport([_reply(0, None), _reply(1, make_train_reply(BAD))]))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.rejected, entry.failures) == (0, 1, 1)
    for name, value in before.items():
        np.testing.assert_array_equal(federation.params[name], value)


@pytest.mark.parametrize("row_averaging", [True, False])
def test_reply_order_does_not_change_the_model(make_train_reply, row_averaging):
    rng = np.random.default_rng(3)
    replies = [_reply(p, make_train_reply({k: rng.normal(size=v.shape).astype(np.float32) for k, v in PARAMS.items()},
                                          num_examples=int(rng.integers(1, 50)), partition=p))
               for p in range(3)]  # fmt: skip
    replies[1] = _reply(1, make_train_reply(_update(0.7), num_examples=7))
    a, b = _federation(row_averaging=row_averaging), _federation(row_averaging=row_averaging)
    a.train(1, CannedTransport(replies))
    b.train(1, CannedTransport(list(reversed(replies))))
    for name in PARAMS:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert a.ledger.round(1).train_loss == b.ledger.round(1).train_loss
    assert a.ledger.reply_rows() == b.ledger.reply_rows()


def test_fedavg_weights_replies_by_their_examples(make_train_reply):
    federation = _federation(row_averaging=False)
    replies = [_reply(0, make_train_reply(_update(1.0), num_examples=1, loss=1.0)),
               _reply(1, make_train_reply(_update(4.0), num_examples=2, loss=4.0))]  # fmt: skip
    federation.train(1, CannedTransport(replies))
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 3.0)
    assert federation.ledger.round(1).train_loss == pytest.approx(3.0)


def test_sampling_depends_only_on_seed_round_and_stream():
    a, b = _federation(partitions=range(20)), _federation(partitions=reversed(range(20)))
    assert a.sample(3, 5, TRAIN_STREAM) == b.sample(3, 5, TRAIN_STREAM)
    rng = np.random.default_rng([0, 3, TRAIN_STREAM])
    assert a.sample(3, 5, TRAIN_STREAM) == sorted(rng.choice(20, size=5, replace=False).tolist())
    draws = {tuple(a.sample(r, 5, s)) for r in (1, 2, 3) for s in (TRAIN_STREAM, EVAL_STREAM)}
    assert len(draws) > 1  # rounds and streams draw apart
    c = _federation(partitions=range(20), seed=1)
    assert any(c.sample(r, 5, TRAIN_STREAM) != a.sample(r, 5, TRAIN_STREAM) for r in (1, 2, 3))
    assert sorted(_federation().sample(1, 3, TRAIN_STREAM)) == [0, 1, 2]
    assert _federation().sample(1, 10, TRAIN_STREAM) == [0, 1, 2]  # never more than there are


def test_a_round_sends_to_the_sampled_partitions(make_train_reply):
    federation = _federation(partitions=range(10), clients_per_round=4)
    transport = FakeTransport(lambda message_type, outgoing: make_train_reply(_update(1.0), partition=outgoing.partition))
    federation.train(2, transport)
    ((message_type, sent),) = transport.sent
    assert message_type == MessageType.TRAIN
    assert [m.partition for m in sent] == federation.sample(2, 4, TRAIN_STREAM)
    assert all(m.content["config"]["server-round"] == 2 for m in sent)
    assert federation.ledger.round(2).clients == 4


def test_encoded_replies_are_counted_against_their_dense_equivalent(make_train_reply):
    big = {"item_embedding.weight": np.zeros((500, 8), np.float32), "item_bias.weight": np.zeros((500, 1), np.float32)}
    federation = _federation(big, prune_method="topk", density=0.01)
    tensors = {k: Sparse(np.array([0]), np.array([1.0], np.float32), v.shape) for k, v in big.items()}
    replies = [_reply(0, make_train_reply(pack_update(tensors)))]
    federation.train(1, CannedTransport(replies))
    entry = federation.ledger.round(1)
    assert entry.rejected == 0 and entry.replies == 1 and entry.uplink_nnz == 2
    assert entry.dense_uplink_bytes > 10 * entry.uplink_bytes
    assert entry.dense_uplink_bytes - entry.uplink_bytes == wire_bytes(to_record(big)) - wire_bytes(replies[0].content["arrays"])
    assert federation.params["item_embedding.weight"][0, 0] == 1.0


def test_dense_arrays_are_rejected_where_the_uplink_method_expects_encoded_ones(make_train_reply):
    federation = _federation(prune_method="topk", density=0.5)
    federation.train(1, CannedTransport([_reply(0, make_train_reply(_update(1.0)))]))
    assert federation.ledger.round(1).rejected == 1


def test_broadcast_is_counted_per_message_with_its_non_zeros_and_dense_equivalent(make_train_reply):
    federation = _federation(downlink_codec="fp16")
    federation.params["item_embedding.weight"][0] = 1.0
    transport = FakeTransport(lambda message_type, outgoing: None)
    federation.train(1, transport)
    ((_, sent),) = transport.sent
    entry = federation.ledger.round(1)
    assert len(sent) == 3 and entry.clients == 3 and entry.failures == 3
    assert entry.downlink_nnz == 3 * 2
    assert entry.downlink_bytes == sum(wire_bytes(m.content) for m in sent)
    dense = Content({"arrays": to_record(federation.params), "config": ConfigMap({"server-round": 1})})
    assert entry.dense_downlink_bytes == 3 * wire_bytes(dense)


def test_a_sparse_fp16_broadcast_costs_less_than_its_dense_equivalent():
    big = {"item_embedding.weight": np.zeros((500, 8), np.float32), "item_bias.weight": np.zeros((500, 1), np.float32)}
    federation = _federation(big, downlink_codec="fp16")
    federation.params["item_embedding.weight"][:50] = 1.0
    federation.broadcaster.broadcast(1, federation.params, dict.fromkeys([0, 1]))
    entry = federation.ledger.round(1)
    assert entry.downlink_nnz == 2 * 400
    assert 5 * entry.downlink_bytes < entry.dense_downlink_bytes


def test_federated_evaluation_averages_by_examples_in_partition_order():
    metrics = {0: {"num-examples": 1, "hr@10": 1.0, "ndcg@10": 0.5},
               1: {"num-examples": 3, "hr@10": 0.0, "ndcg@10": 0.1},
               2: {"num-examples": 0, "hr@10": 0.9, "ndcg@10": 0.9}}  # fmt: skip

    def answer(message_type, outgoing):
        assert message_type == MessageType.EVALUATE
        info = ConfigMap({"partition-id": outgoing.partition, "host": "h"})
        return Content({"metrics": MetricMap(metrics[outgoing.partition]), "info": info})

    results = []
    for reverse in (False, True):
        federation = _federation(federated_eval_clients=3, eval_every=1)
        transport = FakeTransport(answer, reverse=reverse)
        federation.federated_evaluation(1, transport)
        entry = federation.ledger.round(1)
        assert entry.metrics["fed-hr@10"] == pytest.approx(0.25)  # the empty partition does not count
        assert entry.metrics["fed-ndcg@10"] == pytest.approx((0.5 + 3 * 0.1) / 4)
        assert "fed-num-examples" not in entry.metrics
        ((_, sent),) = transport.sent
        assert [m.partition for m in sent] == federation.sample(1, 3, EVAL_STREAM)
        assert entry.uplink_bytes > 0 and entry.downlink_bytes > 0
        assert [r["status"] for r in federation.ledger.reply_rows()] == ["accepted"] * 3
        results.append(entry.metrics)
    assert results[0] == results[1]


def test_federated_evaluation_counts_failures_and_skips_other_rounds():
    def answer(message_type, outgoing):
        if outgoing.partition == 1:
            return None
        return Content({"metrics": MetricMap({"num-examples": 2, "hr@10": outgoing.partition / 2, "ndcg@10": 0.0})})

    federation = _federation(federated_eval_clients=3, eval_every=2, rounds=3)
    transport = FakeTransport(answer)
    federation.federated_evaluation(1, transport)  # not an evaluation round
    assert transport.sent == [] and federation.ledger.round(1).metrics == {}
    federation.federated_evaluation(2, transport)
    entry = federation.ledger.round(2)
    assert entry.failures == 1 and entry.metrics["fed-hr@10"] == pytest.approx(0.5)
    off = _federation(federated_eval_clients=0, eval_every=1)
    off.federated_evaluation(1, transport)
    assert len(transport.sent) == 1


def test_a_run_evaluates_trains_and_reports_every_round(make_train_reply):
    seen = []

    def evaluator(params, server_round):
        seen.append((server_round, float(params["item_embedding.weight"].mean())))
        return {"hr@10": 0.5}

    def answer(message_type, outgoing):
        if message_type == MessageType.TRAIN:
            return make_train_reply(_update(1.0), partition=outgoing.partition)
        return Content({"metrics": MetricMap({"num-examples": 1, "hr@10": 0.25, "ndcg@10": 0.125})})

    federation = _federation(evaluator=evaluator, federated_eval_clients=2, eval_every=1)
    rounds = []
    params = federation.run(FakeTransport(answer), on_round=lambda entry: rounds.append(entry.round))
    assert rounds == [0, 1, 2]
    assert seen == [(0, 0.0), (1, 1.0), (2, 2.0)]  # the initial model, then after each round
    np.testing.assert_allclose(params["item_embedding.weight"], 2.0)
    for r in (1, 2):
        entry = federation.ledger.round(r)
        assert entry.metrics == {"hr@10": 0.5, "fed-hr@10": 0.25, "fed-ndcg@10": 0.125}
        assert entry.replies == 3 and entry.seconds > 0
    assert federation.ledger.round(0).metrics == {"hr@10": 0.5}


def test_model_pruning_follows_its_schedule_and_spares_undeclared_tensors(make_train_reply):
    params = {"item_embedding.weight": np.zeros((10, 4), np.float32), "item_bias.weight": np.zeros((10, 1), np.float32)}
    federation = _federation(params, model_sparsity=0.5, model_prune_start=1, model_prune_end=2)
    rng = np.random.default_rng(0)
    update = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    federation.train(1, CannedTransport([_reply(0, make_train_reply(update))]))
    assert np.count_nonzero(federation.params["item_embedding.weight"]) == 40  # the ramp starts at 0
    federation.train(2, CannedTransport([_reply(0, make_train_reply(update))]))
    assert np.count_nonzero(federation.params["item_embedding.weight"]) == 20
    assert np.count_nonzero(federation.params["item_bias.weight"]) == 10


# ------------------------------------------------------------ over Flower's Grid
class FakeGrid:
    """Flower's Grid as `GridTransport` uses it: answers each message with `answer(message)`
    (a Flower reply Message), in reverse order of sending."""

    def __init__(self, answer) -> None:
        self.answer, self.sent = answer, []

    def send_and_receive(self, messages, timeout=None):
        self.sent.extend(messages)
        return [self.answer(m) for m in reversed(list(messages))]


def test_flower_replies_are_attributed_by_node_and_failures_counted(make_train_reply, make_flower_reply):
    from prunus.server.app import GridTransport

    def answer(message):
        node = message.metadata.dst_node_id
        if node == 11:
            return make_flower_reply(node, None, error="worker died")
        # what a reply claims about its partition does not matter
        return make_flower_reply(node, make_train_reply(_update(float(node - 9)), partition=99, ray_node=f"r{node}"))

    grid = FakeGrid(answer)
    federation = _federation()
    federation.train(1, GridTransport(grid, NODE))
    assert sorted(m.metadata.dst_node_id for m in grid.sent) == [10, 11, 12]
    assert all(m.metadata.message_type == MessageType.TRAIN for m in grid.sent)
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.rejected, entry.failures) == (2, 0, 1)
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 2.0)  # mean of 1 and 3
    rows = federation.ledger.reply_rows()
    assert [(r["partition"], r["node"], r["ray_node"], r["status"]) for r in rows] == [
        (0, 10, "r10", "accepted"), (1, 11, "", "failed"), (2, 12, "r12", "accepted")]  # fmt: skip


def test_message_factories_build_what_flower_delivers(make_train_message, make_flower_reply, make_train_reply):
    content = make_train_reply(_update(1.0), num_examples=4, partition=2, ray_node="n")
    assert dict(content["info"]) == {"partition-id": 2, "host": "h", "ray-node": "n"}
    assert content["metrics"]["num-examples"] == 4
    message = make_train_message(content, 12)
    assert (message.metadata.dst_node_id, message.metadata.message_id) == (12, "m1")
    assert message.metadata.message_type == MessageType.TRAIN
    reply = make_flower_reply(12, content)
    assert reply.metadata.src_node_id == 12 and not reply.has_error()
    failed = make_flower_reply(12, None, error="boom")
    assert failed.has_error() and failed.error.reason == "boom"


def test_a_malformed_evaluation_reply_is_rejected_and_the_others_count():
    replies = {0: {"num-examples": 2, "hr@10": 0.5, "ndcg@10": 0.25},
               1: {"hr@10": 0.9},  # no example count, no ndcg
               2: {"num-examples": 2, "hr@10": [1.0], "ndcg@10": 0.5}}  # fmt: skip

    def answer(message_type, outgoing):
        return Content({"metrics": MetricMap(replies[outgoing.partition])})

    federation = _federation(federated_eval_clients=3, eval_every=1)
    federation.federated_evaluation(1, FakeTransport(answer))
    entry = federation.ledger.round(1)
    assert entry.rejected == 2 and entry.metrics == {"fed-hr@10": 0.5, "fed-ndcg@10": 0.25}
    assert sorted(r["status"] for r in federation.ledger.reply_rows()) == ["accepted", "rejected", "rejected"]


def test_a_train_reply_with_a_list_as_its_loss_is_rejected(make_train_reply):
    good = make_train_reply(_update(1.0), partition=0)
    bad = make_train_reply(_update(9.0), partition=1)
    bad["metrics"] = MetricMap({"num-examples": 3, "train-loss": [0.5, 0.5]})
    federation = _federation()
    federation.train(1, CannedTransport([Reply(0, 10, good), Reply(1, 11, bad)]))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.rejected) == (1, 1) and entry.train_loss == 0.5
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 1.0)


def test_a_second_reply_of_a_partition_and_an_unasked_one_are_rejected(make_train_reply):
    first = make_train_reply(_update(1.0), partition=0)
    again = make_train_reply(_update(9.0), partition=0)  # the same client answering twice
    stranger = make_train_reply(_update(9.0), partition=7)  # not sampled this round
    federation = _federation()
    federation.train(1, CannedTransport([Reply(0, 10, first), Reply(0, 10, again), Reply(7, 17, stranger)]))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.rejected) == (1, 2)
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 1.0)
    assert entry.uplink_bytes == sum(wire_bytes(c) for c in (first, again, stranger))  # received is counted


def test_what_a_client_says_of_itself_is_made_safe_for_the_csv(make_train_reply):
    content = make_train_reply(_update(1.0), partition=0, host="=HYPERLINK(\"x\")" + "a" * 10_000, ray_node="n\x00\n1")
    federation = _federation()
    federation.train(1, CannedTransport([Reply(0, 10, content)]))
    (row,) = federation.ledger.reply_rows()
    assert row["host"].startswith("'=HYPERLINK") and len(row["host"]) <= 129
    assert row["ray_node"] == "n1"


@pytest.mark.parametrize("claim, logged", [
    ({"cuda-device": "cuda:0", "cuda-peak-bytes": 12_345}, ("cuda:0", 12_345)),
    ({}, ("", 0)),  # a client on the CPU says nothing of CUDA
    ({"cuda-device": "=cuda", "cuda-peak-bytes": -1}, ("'=cuda", 0)),
    ({"cuda-device": "cuda:1", "cuda-peak-bytes": "many"}, ("cuda:1", 0)),
    ({"cuda-device": "cuda:1", "cuda-peak-bytes": True}, ("cuda:1", 0)),
])  # fmt: skip
def test_where_a_client_computed_on_cuda_is_logged_as_it_claims_it(make_train_reply, claim, logged):
    content = make_train_reply(_update(1.0), partition=0)
    content["info"] = ConfigMap({**content["info"], **claim})
    federation = _federation()
    federation.train(1, CannedTransport([Reply(0, 10, content)]))
    (row,) = federation.ledger.reply_rows()
    assert (row["status"], row["cuda_device"], row["cuda_peak_bytes"]) == ("accepted", *logged)


def test_a_step_that_would_overflow_the_model_is_refused_and_the_model_kept(make_train_reply):
    federation = _federation(**UNDEFENDED)  # what comes after the defences (which would clip 3e38)
    huge = CannedTransport([Reply(0, 10, make_train_reply(_update(3.0e38), partition=0))])
    federation.train(1, huge)  # finite: the model now holds 3e38
    before = {k: v.copy() for k, v in federation.params.items()}
    assert federation.ledger.round(1).refused == 0
    federation.train(2, huge)  # 3e38 + 3e38 overflows float32
    assert federation.ledger.round(2).refused == 1 and federation.ledger.round(2).replies == 1
    for name, value in before.items():
        np.testing.assert_array_equal(federation.params[name], value)


def test_a_model_the_fp16_broadcast_cannot_carry_travels_clipped_and_counted(make_train_reply):
    federation = _federation(downlink_codec="fp16", **UNDEFENDED)
    federation.train(1, CannedTransport([Reply(0, 10, make_train_reply(_update(1e5), partition=0))]))
    assert federation.ledger.round(1).refused == 0  # not a reason to lose the round
    np.testing.assert_array_equal(federation.params["item_embedding.weight"], 1e5)
    messages = federation.broadcaster.broadcast(2, federation.params, {0: None})
    assert federation.ledger.round(2).metrics["downlink-clipped"] == 12  # every entry of the model
    decoded = DOWNLINK.get("fp16")(federation.cfg.compression).decode(messages[0].content["arrays"], federation.shapes)
    np.testing.assert_array_equal(decoded["item_embedding.weight"], 65504.0)


@pytest.mark.parametrize("aggregator", ["median", "trimmed-mean"])
def test_robust_aggregators_and_clipping_bound_a_byzantine_reply(make_train_reply, aggregator):
    values = {0: 1.0, 1: 1.2, 2: -500.0}  # partition 2 is hostile
    replies = [Reply(p, 10 + p, make_train_reply(_update(v), partition=p)) for p, v in values.items()]
    robust = _federation(aggregator=aggregator, trim_fraction=0.34)
    robust.train(1, CannedTransport(replies))
    np.testing.assert_allclose(robust.params["item_embedding.weight"], 1.0 if aggregator == "median" else 1.0, atol=0.21)
    clipped = _federation(clip_quantile=0.5, zero_factor=0.0)  # clipping alone
    clipped.train(1, CannedTransport(replies))
    assert clipped.ledger.round(1).clipped == 2  # -500, and 1.2: each to the lower median of the others, 1.0's size
    assert np.abs(clipped.params["item_embedding.weight"]).max() < 2.0


# ------------------------------------------------------ partial broadcasts
BIG = {"item_embedding.weight": np.arange(80, dtype=np.float32).reshape(40, 2), "item_bias.weight": np.ones((40, 1), np.float32)}
BIG_SPEC = ModelSpec({k: v.shape for k, v in BIG.items()}, ("item_embedding.weight",), tuple(BIG))
ASKED = {0: np.array([1, 5, 7]), 1: np.array([0, 39]), 2: np.array([2, 3, 4, 5])}


def _partial(answer_train: Callable[[Outgoing], Content | None], asked=ASKED) -> tuple[Federation, FakeTransport]:
    cfg = Config.of(rounds=1, clients_per_round=3, broadcast_rows="requested")
    federation = Federation(cfg, [0, 1, 2], {k: v.copy() for k, v in BIG.items()}, BIG_SPEC, lambda p: {}, Ledger())

    def answer(message_type, outgoing):
        if message_type == ROW_QUERY:
            ids = asked[outgoing.partition]
            if ids is None:
                return None
            payload = np.frombuffer(ids if isinstance(ids, bytes) else encode_row_set(ids, 40), dtype=np.uint8)
            return Content({"rows": Arrays({"ids": npy_array(payload)})})
        return answer_train(outgoing)

    return federation, FakeTransport(answer)


def test_a_partial_broadcast_sends_each_client_its_requested_rows_only(make_train_reply):
    seen = {}

    def train(outgoing):
        seen[outgoing.partition] = outgoing.content
        ids = ASKED[outgoing.partition]
        update = {k: np.zeros_like(v) for k, v in BIG.items()}
        update["item_embedding.weight"][ids] = 1.0
        return make_train_reply(update, partition=outgoing.partition)

    federation, transport = _partial(train)
    federation.train(1, transport)
    assert [t for t, _ in transport.sent] == [ROW_QUERY, MessageType.TRAIN]
    for partition, ids in ASKED.items():
        arrays = seen[partition]["arrays"]
        np.testing.assert_array_equal(arrays["item_embedding.weight"].numpy(), BIG["item_embedding.weight"][ids])
        np.testing.assert_array_equal(arrays["item_bias.weight"].numpy(), BIG["item_bias.weight"][ids])
    entry = federation.ledger.round(1)
    assert entry.replies == 3 and entry.rejected == 0
    assert entry.downlink_bytes == sum(wire_bytes(content) for content in seen.values())
    queries, answers = transport.sent[0][1], [r for r in federation.ledger.replies if r.kind == "rows"]
    assert entry.request_bytes == sum(wire_bytes(q.content) for q in queries) + sum(r.uplink_bytes for r in answers)
    assert federation.ledger.comm_summary()["total_bytes"] == entry.uplink_bytes + entry.downlink_bytes + entry.request_bytes


def test_an_update_of_a_row_not_sent_is_rejected_and_a_bad_request_gets_no_message(make_train_reply):
    def train(outgoing):
        update = {k: np.zeros_like(v) for k, v in BIG.items()}
        update["item_embedding.weight"][10] = 1.0  # asked for [1, 5, 7] only
        return make_train_reply(update, partition=outgoing.partition)

    garbage = b"PRRS" + bytes(30)
    federation, transport = _partial(train, {0: ASKED[0], 1: garbage, 2: None})
    federation.train(1, transport)
    entry = federation.ledger.round(1)
    assert [o.partition for o in transport.sent[1][1]] == [0]  # only the client whose request was good
    assert entry.rejected == 2 and entry.failures == 1 and entry.replies == 0
    assert np.array_equal(federation.params["item_embedding.weight"], BIG["item_embedding.weight"])


def test_a_message_without_a_reply_by_the_round_timeout_counts_failed(make_train_reply, make_flower_reply):
    from prunus.server.app import GridTransport

    class SilentGrid(FakeGrid):  # node 11 never answers within the timeout
        def send_and_receive(self, messages, timeout=None):
            assert timeout == 7.0
            return [r for r in super().send_and_receive(messages, timeout) if r.metadata.src_node_id != 11]

    grid = SilentGrid(lambda m: make_flower_reply(m.metadata.dst_node_id, make_train_reply(_update(1.0))))
    federation = _federation()
    federation.train(1, GridTransport(grid, NODE, timeout=7.0))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.failures) == (2, 1)
    failed = [r for r in federation.ledger.reply_rows() if r["status"] == "failed"]
    assert [(r["partition"], r["node"]) for r in failed] == [(1, 11)]


def test_a_reply_far_above_the_rounds_median_norm_is_zeroed(make_train_reply):
    federation = _federation(zero_factor=5.0)
    replies = [_reply(0, make_train_reply(_update(1.0))), _reply(1, make_train_reply(_update(1.0))),
               _reply(2, make_train_reply(_update(-100.0)))]  # fmt: skip
    federation.train(1, CannedTransport(replies))
    entry = federation.ledger.round(1)
    assert (entry.replies, entry.zeroed) == (3, 1)
    np.testing.assert_allclose(federation.params["item_embedding.weight"], 1.0)


def test_clients_csv_says_which_replies_were_defended_and_why(make_train_reply):
    """Every reply's line says what the defences did to it and why, as a
    rejected or failed reply's says why it was lost."""
    federation = _federation(partitions=(0, 1, 2, 3, 4), clients_per_round=5)
    bias_attack = {**_update(0.5), "item_bias.weight": np.full((4, 1), 1e30, np.float32)}
    row_push = {**_update(0.5), "item_embedding.weight": np.array([[8, 0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],
                                                                   np.float32)}  # one row beyond 4 x sqrt(2)
    contents = [make_train_reply(_update(0.5)), make_train_reply(bias_attack), make_train_reply(row_push),
                make_train_reply(BAD), None]
    replies = [Reply(p, 10 + p, content, "" if content else "worker died") for p, content in enumerate(contents)]
    federation.train(1, CannedTransport(replies))
    entry = federation.ledger.round(1)
    assert (entry.zeroed, entry.row_clipped, entry.rejected, entry.failures) == (1, 1, 1, 1)
    rows = {r["partition"]: r for r in federation.ledger.reply_rows()}
    assert rows[0]["defence"] == "" and rows[0]["reason"] == ""
    assert rows[1]["defence"] == "zeroed" and rows[1]["reason"].startswith("norm 2e+30 > 10 x")
    assert rows[2]["defence"] == "row-clipped" and rows[2]["reason"].startswith("1 row above the trust region")
    assert rows[3]["status"] == "rejected" and rows[3]["reason"]
    assert rows[4]["status"] == "failed" and rows[4]["reason"] == "worker died"
    np.testing.assert_allclose(federation.params["item_bias.weight"], 0.5)  # the 1e30 never reached the model
    np.testing.assert_allclose(federation.params["item_embedding.weight"][0], [(0.5 + 4 * np.sqrt(2)) / 2, 0.25],
                               rtol=1e-6)  # the mean of the honest row and the pushed one at its bound