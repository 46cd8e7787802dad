"""The ClientApp as Flower calls it: a train message in, a reply out."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client.app import PRIVATE_KEY, make_client_app
from common.config import Config
from common.datasets import load_split
from common.models import build_model
from common.params import to_record
from flwr.supercore.task_identity import TaskIdentity

CFG = Config(synthetic_users=30, synthetic_items=25, eval_negatives=9, dim=4)


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower stamps messages with the running task's identity; set one as its
    simulation engine does."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield


def _context(partition: int) -> Context:
    return Context(run_id=1, node_id=100 + partition, node_config={"partition-id": partition, "num-partitions": 30}, state=RecordDict(), run_config={})


def _train_message(server_round: int = 1) -> Message:
    split = load_split(CFG)
    model = build_model(CFG.model, 1, split.n_items, CFG.dim, seed=0)
    content = RecordDict({"arrays": to_record({k: v.numpy() for k, v in model.shared_state().items()}),
                          "config": ConfigRecord({"server-round": server_round})})  # fmt: skip
    message = Message(content, dst_node_id=107, message_type=MessageType.TRAIN)
    message.metadata.__dict__["_message_id"] = "m1"  # as the SuperLink assigns on push
    return message


def test_reply_carries_shared_update_and_never_private_parameters():
    app, context = make_client_app(CFG), _context(7)
    reply = app(_train_message(), context)
    assert not reply.has_error(), reply.error
    arrays = reply.content["arrays"]
    assert set(arrays) == {"item_embedding.weight", "item_bias.weight"}
    assert not any(name.startswith("user") for name in arrays)
    assert reply.content["metrics"]["num-examples"] > 0
    assert reply.content["info"]["partition-id"] == 7
    # the private user vector stays in the node's state, and nowhere in the reply
    user = context.state[PRIVATE_KEY]["user_embedding.weight"].numpy()
    sent = np.concatenate([a.numpy().ravel() for a in arrays.values()])
    assert not np.isin(user.ravel(), sent).any()
