"""The client's handlers without Flower's runtime: broadcast in, uplink payload out.

What `client.app` and the in-process engine both run: the broadcast is
decoded with the downlink method, the update encoded with the uplink method,
and the state (private user vectors, the error-feedback residual) stays in
the state record, never in the reply.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunus.client import handlers
from prunus.client.handlers import PRIVATE_KEY, RESIDUAL_KEY, ClientData
from prunus.common.codec_rows import decode_row_set, encode_row_set
from prunus.common.compression import DOWNLINK, ROWS, UPLINK, BroadcastContext, PayloadError, RoundContext, make
from prunus.common.config import Config
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model, model_spec
from prunus.common.params import npy_array
from prunus.common.payload import Arrays, ConfigMap, Content
from prunus.common.update import densify, sent_entries

CFG = Config.of(synthetic_users=30, synthetic_items=25, eval_negatives=9, train_negatives=2, dim=4,
                local_epochs=1, user_refit_epochs=1)
CPU = torch.device("cpu")


def _global(cfg: Config) -> dict[str, np.ndarray]:
    split = load_split(cfg)
    model = build_model(cfg.model.model, 1, split.n_items, cfg.model.dim, cfg.model.mlp_widths, seed=0)
    return {k: v.numpy() for k, v in model.shared_state().items()}


def _content(cfg: Config, params: dict[str, np.ndarray], server_round: int) -> Content:
    """What the server sends: the broadcast (downlink method applied) and the round."""
    arrays = DOWNLINK.get(cfg.compression.downlink_codec)(cfg.compression).encode(params, BroadcastContext(1, 0))
    return Content({"arrays": arrays, "config": ConfigMap({"server-round": server_round})})


def _client(cfg: Config, partition: int) -> ClientData:
    return ClientData.of(partition, load_split(cfg), np.asarray(partitions(cfg)[partition]), CPU)


@pytest.mark.parametrize("downlink", DOWNLINK.names())
@pytest.mark.parametrize("uplink", UPLINK.names())
def test_train_replies_with_the_uplink_payload_and_keeps_its_state(uplink, downlink):
    cfg = CFG.replace(prune_method=uplink, density=0.2, prune_threshold=0.01, value_codec="int8",
                      downlink_codec=downlink)
    params, state, client = _global(cfg), Content(), _client(cfg, 4)
    shapes = {name: value.shape for name, value in params.items()}
    for server_round in (1, 2):
        reply = handlers.train(cfg, _content(cfg, params, server_round), state, client)
        assert set(reply) == {"arrays", "metrics"}
        ctx = RoundContext(server_round, 4, cfg.runtime.seed)
        update = make(UPLINK, uplink, cfg).decode(reply["arrays"], shapes, ctx)  # the server's half
        assert set(update) == set(shapes)
        assert reply["metrics"]["nnz"] == sum(sent_entries(t) for t in update.values())
        assert reply["metrics"]["num-examples"] > 0
        assert PRIVATE_KEY in state and RESIDUAL_KEY in state  # int8 values: a residual is kept
        assert set(state[PRIVATE_KEY]) == {"user_embedding.weight"}
        assert not set(reply["arrays"]) & (set(state[PRIVATE_KEY]) | set(state[RESIDUAL_KEY]))


def test_the_dense_baseline_keeps_no_residual():
    params, state, client = _global(CFG), Content(), _client(CFG, 1)
    reply = handlers.train(CFG, _content(CFG, params, 1), state, client)
    assert RESIDUAL_KEY not in state and PRIVATE_KEY in state
    update = densify(UPLINK.get("none")(CFG.compression).decode(reply["arrays"], {k: v.shape for k, v in params.items()}))
    assert update["item_embedding.weight"].any()


def test_a_broadcast_that_does_not_fit_the_model_is_refused():
    cfg = CFG.replace(downlink_codec="int8")
    params = _global(cfg)
    params["item_embedding.weight"] = params["item_embedding.weight"][:-1]  # one item short
    with pytest.raises(PayloadError):
        handlers.train(cfg, _content(cfg, params, 1), Content(), _client(cfg, 0))


def test_evaluate_ranks_the_local_users_and_replies_metrics_only():
    params, state, client = _global(CFG), Content(), _client(CFG, 2)
    handlers.train(CFG, _content(CFG, params, 1), state, client)
    reply = handlers.evaluate(CFG, _content(CFG, params, 1), state, client)
    assert set(reply) == {"metrics"}
    metrics = reply["metrics"]
    assert metrics["num-examples"] == len(client.data.users)
    assert all(0.0 <= float(v) <= 1.0 for k, v in metrics.items() if k != "num-examples")


def _requested(cfg: Config, client: ClientData, params: dict[str, np.ndarray], server_round: int,
               purpose: str = "train") -> tuple[np.ndarray, Content]:
    """A row query and its answer, then the message the server builds from it."""
    query = Content({"config": ConfigMap({"server-round": server_round, "purpose": purpose})})
    answer = handlers.request_rows(cfg, query, Content(), client)
    ids = decode_row_set(answer["rows"]["ids"].numpy().tobytes(), client.split.n_items)
    rows = dict.fromkeys(model_spec(cfg.model, client.split.n_items).item_tables, ids)
    arrays = DOWNLINK.get(cfg.compression.downlink_codec)(cfg.compression).encode(
        params, BroadcastContext(server_round, 0, rows))
    return ids, Content({"arrays": arrays, "config": ConfigMap({"server-round": server_round})})


@pytest.mark.parametrize("model", ["mf", "neumf"])
@pytest.mark.parametrize("pad", [0.0, 1.0])
def test_a_partial_broadcast_client_asks_for_its_rows_and_updates_no_other(model, pad):
    cfg = CFG.replace(model=model, synthetic_items=200, broadcast_rows="requested", negative_pool=1.0, request_pad=pad,
                      downlink_codec="int4", local_optimizer="adam" if model == "neumf" else "sgd")
    params, client = _global(cfg), _client(cfg, 3)
    ids, content = _requested(cfg, client, params, 2)
    positives = np.unique(client.data.items)
    assert set(positives) <= set(ids) and len(ids) < client.split.n_items
    plan = handlers.row_plan(cfg, "train", 2, client)
    np.testing.assert_array_equal(plan.request, ids)  # the query's answer is the plan the message trains on
    assert set(plan.negatives) <= set(ids)
    reply = handlers.train(cfg, content, Content(), client)
    update = densify(UPLINK.get("none")(cfg.compression).decode(reply["arrays"], {k: v.shape for k, v in params.items()}))
    for name in model_spec(cfg.model, client.split.n_items).item_tables:
        touched = np.flatnonzero(update[name].reshape(len(update[name]), -1).any(axis=1))
        assert set(touched) <= set(ids) and len(touched)


def test_padding_rows_are_asked_for_but_not_trained_on():
    cfg = CFG.replace(synthetic_items=200, broadcast_rows="requested", negative_pool=1.0, request_pad=2.0)
    client = _client(cfg, 3)
    plan = handlers.row_plan(cfg, "train", 1, client)
    unpadded = handlers.row_plan(cfg.replace(request_pad=0.0), "train", 1, client)
    assert len(plan.request) > len(unpadded.request)
    np.testing.assert_array_equal(plan.negatives, unpadded.negatives)


def test_the_server_cannot_draw_a_requests_cover_again():
    """A server that knows the run seed, the round, the partition and even how
    many rows the client needs draws the pool and padding again and strips
    them: the rows left must still hide the client's items among others."""
    cfg = CFG.replace(synthetic_items=400, broadcast_rows="requested", negative_pool=2.0, request_pad=1.0)
    client = _client(cfg, 3)
    plan = handlers.row_plan(cfg, "train", 2, client)
    needed = handlers.needed_rows(client, "train")
    server = make(ROWS, "requested", cfg).plan(needed, client.split.n_items, RoundContext(2, 3, cfg.runtime.seed))
    left = np.setdiff1d(plan.request, server.request)
    assert set(needed) <= set(plan.request) and len(left) > 2 * len(needed)
    # the secret is the client's data: another client's plan differs, its own does not
    assert client.secret == _client(cfg, 3).secret != _client(cfg, 4).secret


def test_federated_evaluation_asks_for_its_candidates_too():
    cfg = CFG.replace(synthetic_items=200, broadcast_rows="requested", negative_pool=0.5)
    params, client = _global(cfg), _client(cfg, 3)
    ids, content = _requested(cfg, client, params, 1, purpose="evaluate")
    users = client.data.users
    candidates = np.concatenate([client.split.test_items[users], client.split.test_negatives[users].ravel()])
    assert set(candidates[candidates >= 0]) <= set(ids)
    reply = handlers.evaluate(cfg, content, Content(), client)
    assert 0 <= reply["metrics"]["hr@10"] <= 1


def test_a_client_sent_rows_it_did_not_choose_trains_on_its_items_among_them():
    cfg = CFG.replace(synthetic_items=200, broadcast_rows="bandit")
    params, client = _global(cfg), _client(cfg, 3)
    positives = np.unique(client.data.items)
    ids = np.union1d(positives[::2], [1, 2, 3])
    rows = dict.fromkeys(model_spec(cfg.model, 200).item_tables, ids)
    arrays = DOWNLINK.get("fp32")(cfg.compression).encode(params, BroadcastContext(1, 0, rows))
    named = Arrays({"ids": npy_array(np.frombuffer(encode_row_set(ids, 200), np.uint8))})
    content = Content({"arrays": arrays, "rows": named, "config": ConfigMap({"server-round": 1})})
    reply = handlers.train(cfg, content, Content(), client)
    assert reply["metrics"]["num-examples"] == np.isin(client.data.items, ids).sum()
    update = densify(UPLINK.get("none")(cfg.compression).decode(reply["arrays"], {k: v.shape for k, v in params.items()}))
    assert set(np.flatnonzero(update["item_embedding.weight"].any(1))) <= set(ids)
    elsewhere = np.setdiff1d(np.arange(200), positives)[:5]  # none of its items: an empty update, state kept
    rows = dict.fromkeys(model_spec(cfg.model, 200).item_tables, elsewhere)
    content = Content({"arrays": DOWNLINK.get("fp32")(cfg.compression).encode(params, BroadcastContext(1, 0, rows)),
                          "rows": Arrays({"ids": npy_array(np.frombuffer(encode_row_set(elsewhere, 200), np.uint8))}),
                          "config": ConfigMap({"server-round": 2})})
    state = Content()
    reply = handlers.train(cfg, content, state, client)
    assert reply["metrics"]["num-examples"] == 0 and not len(state)
    bad = Content({**content, "rows": Arrays({"ids": npy_array(np.zeros(3, np.uint8))})})
    with pytest.raises(PayloadError, match="row set"):
        handlers.train(cfg, bad, Content(), client)


BAD_ROUNDS = {"missing": None, "a string": "1", "a float": 1.5, "a bool": True, "zero": 0, "negative": -1,
              "past 2^32": 2**32, "a list": [1]}


@pytest.mark.parametrize("value", BAD_ROUNDS.values(), ids=list(BAD_ROUNDS))
def test_a_message_without_a_usable_round_is_a_payload_error_for_every_handler(value):
    """The round was read as `int(content["config"]["server-round"])`: a
    message without one raised KeyError (ValueError for "x", a negative seed
    error for -1, ValueError deep in training for 0) instead of the payload
    error a client documents; the state home and the fault switch read it too."""
    from prunus.client import dispatch
    from prunus.client.state import MemoryHome
    from prunus.common.compression.base import ROW_QUERY
    from prunus.common.secagg import messages as secagg

    cfg = CFG.replace(broadcast_rows="requested")
    content = _content(cfg, _global(cfg), 1)
    config = {k: v for k, v in content["config"].items() if k != "server-round"}
    if value is not None:
        config["server-round"] = value
    content = Content({**content, "config": ConfigMap({**config, "purpose": "train"})})
    for message_type in ("train", "evaluate", ROW_QUERY, secagg.KEYS, secagg.SECURE_TRAIN):
        with pytest.raises(PayloadError, match="server round"):
            dispatch.answer(message_type, cfg, content, MemoryHome(cfg), _client(cfg, 1), isolated=False)
    with pytest.raises(PayloadError, match="server round"):
        handlers.message_round(Content({"config": Arrays()}))


@pytest.mark.parametrize("purpose", [None, "", "bogus", 1, ["train"]])
def test_a_row_query_of_no_known_purpose_is_a_payload_error(purpose):
    """Any purpose but "evaluate" was planned as a training message's rows."""
    cfg = CFG.replace(broadcast_rows="requested")
    config = {"server-round": 1} | ({} if purpose is None else {"purpose": purpose})
    with pytest.raises(PayloadError, match="purpose"):
        handlers.request_rows(cfg, Content({"config": ConfigMap(config)}), Content(), _client(cfg, 1))


@pytest.mark.parametrize("record", [None, ConfigMap({"item_embedding.weight": b"x"}), {"a": 1}])
def test_a_message_without_its_broadcast_is_a_payload_error(record):
    """`content["arrays"]` raised KeyError for a message without one."""
    content = _content(CFG, _global(CFG), 1)
    content = Content({k: v for k, v in content.items() if k != "arrays"} | ({} if record is None else
                                                                             {"arrays": record}))
    for handler in (handlers.train, handlers.evaluate):
        with pytest.raises(PayloadError, match="arrays"):
            handler(CFG, content, Content(), _client(CFG, 1))


def test_a_message_is_read_whole_before_any_training(monkeypatch):
    """A bad basis was found only after local training, its work wasted."""
    from prunus.common.compression.uplink.lowrank import basis_content

    cfg = CFG.replace(prune_method="lowrank", rank=2, rank_basis="model")
    params, client, state = _global(cfg), _client(cfg, 4), Content()
    bad = basis_content({"item_embedding.weight": np.full((cfg.model.dim, 2), 2.0, np.float32)})
    with monkeypatch.context() as patched:
        patched.setattr(handlers, "local_update", lambda *args, **kwargs: pytest.fail("trained on a bad message"))
        with pytest.raises(PayloadError, match="basis"):
            handlers.train(cfg, Content({**_content(cfg, params, 1), **bad}), state, client)
    assert not len(state)
    message = handlers.receive(cfg, _content(cfg, params, 1), client, "train")
    assert message.server_round == 1 and message.plan is None and message.basis is None
    assert {k: v.shape for k, v in message.shared.items()} == {k: v.shape for k, v in params.items()}
