"""The ClientApp as Flower calls it: a train message in, a reply out."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from prunus.client import state_store
from prunus.client.app import make_client_app
from prunus.client.handlers import PRIVATE_KEY
from prunus.common.config import Config
from prunus.common.datasets import load_split
from prunus.common.flower_records import to_array_record
from prunus.common.models import build_model
from prunus.common.params import array_of, to_record
from prunus.common.partition_files import write_partition_files
from prunus.common.payload import Content

CFG = Config.of(synthetic_users=30, synthetic_items=25, eval_negatives=9, dim=4)


def _context(partition: int) -> Context:
    return Context(run_id=1, node_id=100 + partition, node_config={"partition-id": partition, "num-partitions": 30}, state=RecordDict(), run_config={})


@pytest.fixture
def train_message_for(make_train_message):
    """A train message with the initial global model, as the server sends round `server_round`."""

    def build(cfg: Config, server_round: int = 1) -> Message:
        split = load_split(cfg)
        model = build_model(cfg.model.model, 1, split.n_items, cfg.model.dim, seed=0)
        content = RecordDict({"arrays": to_array_record(to_record({k: v.numpy() for k, v in model.shared_state().items()})),
                              "config": ConfigRecord({"server-round": server_round})})  # fmt: skip
        return make_train_message(content, dst_node_id=107)

    return build


def test_reply_carries_shared_update_and_never_private_parameters(train_message_for, tmp_path):
    cfg = CFG.replace(out=str(tmp_path))
    app, context = make_client_app(cfg), _context(7)
    reply = app(train_message_for(cfg), context)
    assert not reply.has_error(), reply.error
    arrays = reply.content["arrays"]
    assert set(arrays) == {"item_embedding.weight", "item_bias.weight"}
    assert not any(name.startswith("user") for name in arrays)
    assert reply.content["metrics"]["num-examples"] > 0
    assert reply.content["info"]["partition-id"] == 7
    # the private user vector stays in the simulated node's state store (not in
    # the Context, which travels with every message), and nowhere in the reply
    assert not len(context.state)
    state = Content()
    state_store.restore(cfg, state, 7, 1)
    user = array_of(state[PRIVATE_KEY]["user_embedding.weight"])
    sent = np.concatenate([a.numpy().ravel() for a in arrays.values()])
    assert not np.isin(user.ravel(), sent).any()


def test_a_reply_computed_on_the_cpu_says_nothing_of_cuda(train_message_for, tmp_path, monkeypatch):
    """Its info is the in-process engine's (the same bytes); on CUDA it would name the device and its peak memory."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = CFG.replace(out=str(tmp_path))
    reply = make_client_app(cfg)(train_message_for(cfg), _context(7))
    assert not reply.has_error(), reply.error
    assert set(reply.content["info"]) == {"partition-id", "host"}


def _csv_partitions(tmp_path) -> tuple[Config, Path]:
    """A small csv data set cut into 3 partition files; the config and the files' folder."""
    table = tmp_path / "ratings.csv"
    rng = np.random.default_rng(0)
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, 12, 120), rng.integers(0, 40, 120))}
    table.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in sorted(pairs)))
    cfg = Config.of(dataset="csv", data_dir=str(table), partition="iid", num_silos=3, eval_negatives=5, dim=4,
                    out=str(tmp_path / "run"))
    write_partition_files(cfg, tmp_path / "parts")
    return cfg, tmp_path / "parts"


def _node(parts: Path, run_config: dict) -> Context:
    return Context(run_id=1, node_id=101, state=RecordDict(), run_config=run_config,
                   node_config={"partition-id": 1, "data-file": str(parts / "partition-1.npz")})  # fmt: skip


def test_a_node_with_a_partition_file_trains_on_it_alone(tmp_path, train_message_for):
    """Deployment mode: the node reads its own file (the data set itself is gone)
    and sends exactly what a simulated node of the same partition sends."""
    cfg, parts = _csv_partitions(tmp_path)
    message = train_message_for(cfg)
    simulated = make_client_app(cfg)(message, _context(1))
    Path(cfg.data.data_dir).unlink()
    deployed = make_client_app(cfg)(message, _node(parts, {}))
    assert not deployed.has_error(), deployed.error
    for name, array in simulated.content["arrays"].items():
        np.testing.assert_array_equal(deployed.content["arrays"][name].numpy(), array.numpy())


def test_under_flwr_run_a_node_with_a_partition_file_needs_no_data_dir_of_its_own(tmp_path, train_message_for):
    """The run config names the server's data-dir (central evaluation), a path
    a SuperNode's host need not have: the node still answers from its file."""
    cfg, parts = _csv_partitions(tmp_path)
    message = train_message_for(cfg)
    expected = make_client_app(cfg)(message, _node(parts, {}))
    run_config = cfg.to_dict() | {"data-dir": str(tmp_path / "on-the-server-only")}
    deployed = make_client_app()(message, _node(parts, run_config))
    assert not deployed.has_error(), deployed.error
    for name, array in expected.content["arrays"].items():
        np.testing.assert_array_equal(deployed.content["arrays"][name].numpy(), array.numpy())


def test_a_hostile_state_fails_only_its_own_message_in_a_batch(train_message_for, tmp_path):
    """Under Flower's engine (a client actor's batch, `common.flower_compat`):
    a residual planted x1e30 in one client's store is that message's error
    reply naming it, and the message batched beside it gets its reply."""
    from prunus.client.state_format import pack, unpack
    from prunus.common import flower_compat
    from prunus.common.params import from_record

    cfg = CFG.replace(out=str(tmp_path), prune_method="topk-global", density=0.2)
    app = make_client_app(cfg)
    contexts = [_context(3), _context(7)]
    for context in contexts:  # round 1 leaves each a residual
        assert not app(train_message_for(cfg, 1), context).has_error()
    path = tmp_path / "client-state" / "3" / "1.state"
    with open(path, "rb") as handle:
        state = unpack(handle.read, str(path))
    state["residual"] = to_record({name: value * np.float32(1e30) if name.endswith(".val") else value
                                   for name, value in from_record(state["residual"]).items()})
    head, blobs = pack(state)
    path.write_bytes(head + b"".join(blobs))
    messages = [train_message_for(cfg, 2) for _ in contexts]
    replies = flower_compat._BatchLoader(lambda: app)()(message=messages, context=contexts)
    assert replies[0].has_error() and "StateError: client state: residual" in replies[0].error.reason
    assert "beyond the 1e+06 no honest state comes near" in replies[0].error.reason
    assert not replies[1].has_error() and replies[1].content["metrics"]["num-examples"] > 0
