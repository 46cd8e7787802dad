"""Shared test helpers: Flower messages and reply contents, built in one place.

Tests ask for a factory by fixture name and call it:

    def test_x(make_train_reply, make_flower_reply):
        reply = make_flower_reply(10, make_train_reply({"w": np.zeros(2, np.float32)}))

* `make_train_reply(arrays, num_examples=3, loss=0.5, partition=0, host="h",
  ray_node="")` -> the prunus `Content` a client's train reply carries ("arrays",
  "metrics", "info");
* `make_flower_reply(node, content, message_type=TRAIN, error="")` -> a Flower
  `Message` replying to a request sent to `node`, its source node id set
  (an error reply when `content` is None; prunus content goes as Flower's records);
* `make_train_message(content, dst_node_id, message_id="m1",
  message_type=TRAIN)` -> a Flower message to a node, with the message id the
  SuperLink would assign on push;
* `task_identity`: sets Flower's `TaskIdentity` (run 1, task 1, node 0) as its
  engine does for the running task, and restores the previous values after
  the test. The message factories request it, so a test using them needs
  nothing else.

This module is the only place that writes Flower's private message fields
(`metadata.__dict__`): they move between Flower releases (see
`common/flower_compat.py`), and one place is one place to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest
from flwr.app import Error, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from prunus.common.flower_records import to_flower
from prunus.common.params import to_record
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap

_IDENTITY = ("task_id", "run_id", "node_id")


def train_reply_content(arrays: Arrays | Mapping[str, np.ndarray], num_examples: int | float = 3,
                        loss: float = 0.5, partition: int = 0, host: str = "h", ray_node: str = "") -> Content:
    """A train reply's content; `arrays` as `Arrays` or named numpy arrays."""
    record = arrays if isinstance(arrays, Arrays) else to_record(dict(arrays))
    info: dict[str, int | str] = {"partition-id": partition, "host": host}
    if ray_node:
        info["ray-node"] = ray_node
    return Content({
        "arrays": record,
        "metrics": MetricMap({"num-examples": num_examples, "train-loss": loss}),
        "info": ConfigMap(info),
    })


def train_message(content: Content | RecordDict, dst_node_id: int, message_id: str = "m1",
                  message_type: str = MessageType.TRAIN) -> Message:
    """A message to `dst_node_id` as the SuperLink delivers it (its id set on push)."""
    message = Message(_records(content), dst_node_id=dst_node_id, message_type=message_type)
    message.metadata.__dict__["_message_id"] = message_id
    return message


def _records(content: Content | RecordDict) -> RecordDict:
    return to_flower(content) if isinstance(content, Content) else content


def flower_reply(node: int, content: Content | RecordDict | None, message_type: str = MessageType.TRAIN,
                 error: str = "client failed") -> Message:
    """Node `node`'s reply to a request of `message_type`; an error reply when
    `content` is None."""
    request = train_message(RecordDict(), node, message_id=f"m{node}", message_type=message_type)
    reply = Message(_records(content), reply_to=request) if content is not None else Message(Error(code=0, reason=error), reply_to=request)
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


@pytest.fixture
def task_identity() -> Iterator[type[TaskIdentity]]:
    """The identity Flower's engine sets for a running task (needed to create messages)."""
    saved = {name: getattr(TaskIdentity, f"_{name}") for name in _IDENTITY}
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield TaskIdentity
    for name, value in saved.items():
        setattr(TaskIdentity, name, value)


@pytest.fixture
def make_train_reply() -> Callable[..., Content]:
    return train_reply_content


@pytest.fixture
def make_train_message(task_identity) -> Callable[..., Message]:
    return train_message


@pytest.fixture
def make_flower_reply(task_identity) -> Callable[..., Message]:
    return flower_reply
