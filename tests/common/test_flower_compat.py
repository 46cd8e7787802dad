"""Flower's accelerators: each engages only where what it relies on is there,
else leaves stock Flower in place with one warning line; nothing raises."""

import logging
import subprocess
import sys
import threading
import time
from importlib.metadata import distribution
from types import SimpleNamespace

import pytest

from prunus.common import flower_compat
from prunus.common.flower_compat import Needs


def test_another_flower_version_imports_and_the_accelerators_still_check_themselves():
    code = (
        "import importlib.metadata as m; real = m.version\n"
        "m.version = lambda name: '9.9.9' if name == 'flwr' else real(name)\n"
        "from prunus.common import flower_compat\n"
        "print(flower_compat.enable_fast_dispatch(), flower_compat.enable_client_batches(16))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]  # what they rely on is there, whatever the version says


@pytest.mark.parametrize(("need", "unmet"), [
    (Needs("flwr.no_such_module:f"), "no flwr.no_such_module:f"),
    (Needs("flwr.server.superlink.fleet.vce.vce_api:no_such_function"), "no flwr.server"),
    (Needs("flwr.server.superlink.fleet.vce.vce_api:worker", ("queue",)), "takes (messageins_queue), not (queue)"),
    (Needs("flwr.simulation.ray_transport.ray_actor:BasicActorPool", sets=("no_such_field",)), "sets no no_such_field"),
])
def test_a_need_that_does_not_hold_says_what_is_missing(need, unmet):
    assert unmet in need.unmet()


def test_an_accelerator_whose_needs_fail_leaves_stock_flower_and_warns_once(monkeypatch, caplog):
    from flwr.server.superlink.fleet.vce import vce_api

    flower_compat.enable_fast_dispatch(False)
    stock = vce_api.add_messages_to_queue
    monkeypatch.setattr(flower_compat, "FAST_DISPATCH_NEEDS", (Needs("flwr.gone:add_messages_to_queue"),))
    monkeypatch.setattr(flower_compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="prunus"):
        assert flower_compat.enable_fast_dispatch() is False
        assert flower_compat.enable_fast_dispatch() is False
    assert vce_api.add_messages_to_queue is stock
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fast-dispatch is off" in lines[0] and "no flwr.gone" in lines[0]
    assert "\n" not in lines[0]


def test_every_accelerator_engages_on_the_installed_flower():
    try:
        assert flower_compat.enable_fast_dispatch() and flower_compat.enable_fast_submit()
        assert flower_compat.enable_actor_pipeline(2) and flower_compat.enable_client_batches(4)
        assert flower_compat.record_engine_partitions() and flower_compat.enable_actor_share(2)
        assert flower_compat.enable_clean_actor_shutdown() and flower_compat._array_shortcut_ok()
        assert all(not need.unmet() for need in flower_compat.REPLY_WAIT_NEEDS)
        assert flower_compat.route_ray_driver_messages(logging.getLogger("test"))
    finally:
        flower_compat.enable_fast_dispatch(False), flower_compat.enable_fast_submit(False)
        flower_compat.enable_actor_pipeline(1), flower_compat.enable_client_batches(1)
        flower_compat.record_engine_partitions(False), flower_compat.enable_actor_share(1)
        flower_compat.enable_clean_actor_shutdown(False), flower_compat.route_ray_driver_messages(None)


def test_the_distribution_installs_one_namespace_and_no_top_level_packages():
    tops = {entry.split("/")[0] for entry in distribution("prunus").read_text("top_level.txt").split()} \
        if distribution("prunus").read_text("top_level.txt") else set()
    for name in ("common", "client", "server", "simulations"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd="/")
        assert result.returncode != 0, f"a top-level {name!r} package is importable"
    assert tops <= {"prunus"}


def test_clean_actor_shutdown_can_be_switched_on_and_off():
    from flwr.simulation.ray_transport import ray_actor

    flower_compat.enable_clean_actor_shutdown(False)
    original = ray_actor.BasicActorPool.terminate_all_actors
    flower_compat.enable_clean_actor_shutdown()
    assert ray_actor.BasicActorPool.terminate_all_actors is not original
    flower_compat.enable_clean_actor_shutdown(False)
    assert ray_actor.BasicActorPool.terminate_all_actors is original


def test_every_package_folder_is_in_the_distribution():
    """A subpackage missing from pyproject's list would be left out of a wheel
    (and would make an editable install fall back to the project folder)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"prunus." + ".".join(init.parent.relative_to(root).parts)
             for top in ("common", "client", "server", "simulations") for init in (root / top).rglob("__init__.py")}
    assert found == listed


def test_fast_submit_and_the_actor_pipeline_can_be_switched_on_and_off():
    from flwr.server.superlink.fleet.vce.backend import raybackend
    from flwr.simulation.ray_transport import ray_actor

    for enable, owner, attribute in ((flower_compat.enable_fast_submit, raybackend.RayBackend, "build"),
                                     (flower_compat.enable_actor_pipeline, ray_actor.BasicActorPool, "add_actors_to_pool")):
        off = 1 if enable is flower_compat.enable_actor_pipeline else False
        enable(off)
        original = getattr(owner, attribute)
        enable()
        assert getattr(owner, attribute) is not original
        enable(off)
        assert getattr(owner, attribute) is original


def test_the_actor_pipeline_lists_each_actor_depth_times():
    from flwr.simulation.ray_transport import ray_actor

    flower_compat.enable_actor_pipeline(3)
    try:
        pool = ray_actor.BasicActorPool.__new__(ray_actor.BasicActorPool)
        pool.pool, pool.num_actors = [], 0
        made = iter(["a", "b"])
        pool.create_actor_fn = lambda: next(made)
        pool.add_actors_to_pool(2)
        assert pool.pool == ["a", "a", "a", "b", "b", "b"] and pool.num_actors == 6  # one driver thread per entry
    finally:
        flower_compat.enable_actor_pipeline(1)


def test_engine_partitions_are_the_engines_map_or_nothing():
    """The map the engine registered, inverted; None when the federation's
    nodes are not the ones this process's engine made (then the server asks)."""
    from flwr.server.superlink.fleet.vce import vce_api

    calls = []
    flower_compat.record_engine_partitions(False)
    original = vce_api._register_nodes
    vce_api._prunus_original__register_nodes = lambda num_nodes, state_factory: calls.append(num_nodes) or {7: 0, 9: 1}
    try:
        flower_compat.record_engine_partitions()
        assert vce_api._register_nodes(2, None) == {7: 0, 9: 1} and calls == [2]
        assert flower_compat.engine_partitions({7, 9}) == {0: 7, 1: 9}
        assert flower_compat.engine_partitions({7, 9, 11}) is None
    finally:
        vce_api._prunus_original__register_nodes = original
        flower_compat.record_engine_partitions(False)
    assert flower_compat.engine_partitions({7, 9}) is None  # switched off: forgotten


def test_a_batch_runs_each_message_through_the_client_app_and_a_failure_is_that_messages_error(task_identity):
    """What a client actor runs for a batch: every (message, context) pair
    through the ClientApp in order; a ClientApp that raises gives that message
    Flower's error reply, and the others their replies."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.common.constant import ErrorCode

    def app(message, context):
        if context.node_config["partition-id"] == 1:
            raise ValueError("client 1 broke")
        context.state["seen"] = ConfigRecord({"round": int(message.content["config"]["round"])})
        return Message(RecordDict({"config": ConfigRecord({"echo": context.node_config["partition-id"]})}),
                       reply_to=message)

    messages, contexts = [], []
    for partition in range(3):
        message = Message(RecordDict({"config": ConfigRecord({"round": 7})}), dst_node_id=10 + partition,
                          message_type="train")
        message.metadata.__dict__["_message_id"] = f"m{partition}"
        messages.append(message)
        contexts.append(Context(run_id=1, node_id=10 + partition, node_config={"partition-id": partition},
                                state=RecordDict(), run_config={}))
    replies = flower_compat._BatchLoader(lambda: app)()(message=messages, context=contexts)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1", "m2"]
    assert [r.has_error() for r in replies] == [False, True, False]
    assert replies[1].error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION and "client 1 broke" in replies[1].error.reason
    assert [r.content["config"]["echo"] for r in (replies[0], replies[2])] == [0, 2]
    assert contexts[2].state["seen"]["round"] == 7  # the context goes back with its updates


def test_client_batches_can_be_switched_on_and_off():
    from flwr.server.superlink.fleet.vce import vce_api

    flower_compat.enable_client_batches(1)
    original = vce_api.worker
    flower_compat.enable_client_batches(8)
    assert vce_api.worker is flower_compat._batch_worker
    flower_compat.enable_client_batches(1)
    assert vce_api.worker is original


def test_a_batch_whose_call_goes_wrong_gives_each_message_an_error_reply(task_identity):
    """An actor call that fails, or answers with the wrong number of replies:
    every message of the batch gets an error reply (none is lost), as Flower's
    worker does for one message, and the worker thread goes on."""
    import threading
    from queue import Queue

    from flwr.app import Context, Message, RecordDict

    stop = threading.Event()

    class Pool:
        def __init__(self, answer):
            self.answer = answer

        def submit(self, actor_fn, job):
            return "future"

        def fetch_result_and_return_actor_to_pool(self, future):
            stop.set()  # one batch, then the worker's loop ends
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

        def add_actor_back_to_pool(self, future):
            pass

    class Store:
        def retrieve_context(self, run_id):
            return Context(run_id=run_id, node_id=1, node_config={}, state=RecordDict(), run_config={})

        def update_context(self, run_id, context):
            raise AssertionError("no context may be taken from a failed batch")

    class Metrics:
        def add_clientapp_runtime(self, seconds):
            pass

    flower_compat.enable_client_batches(8)
    try:
        for answer in (RuntimeError("actor died"), (["one reply"], ["one context"])):
            stop.clear()
            incoming, outgoing = Queue(), Queue()
            sent = []
            for node in (1, 2, 3):
                message = Message(RecordDict(), dst_node_id=node, message_type="train")
                message.metadata.__dict__["_message_id"] = f"m{node}"
                sent.append(message)
                incoming.put(message)
            backend = type("Backend", (), {"pool": Pool(answer), "_prunus_batch_loader": "loader", "num_workers": 1})()
            flower_compat._batch_worker(incoming, outgoing, {n: Store() for n in (1, 2, 3)}, backend, stop, Metrics())
            replies = [outgoing.get_nowait() for _ in range(3)]
            assert outgoing.empty() and all(r.has_error() for r in replies)
            assert [r.metadata.reply_to_message_id for r in replies] == ["m1", "m2", "m3"]
    finally:
        flower_compat.enable_client_batches(1)


def test_a_batch_whose_actor_dies_loses_only_the_message_that_killed_it(task_identity):
    """An actor that dies in a batch of 16 (at its 6th message, every time
    that message runs): the batch goes again one message per call, the 15
    others get their replies and their contexts, and only the 6th fails, with
    Ray's error; the batch call itself is not retried by Ray (it would run the
    killer again), the single calls are."""
    import threading
    from queue import Queue

    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from ray.exceptions import ActorDiedError

    stop, killer, calls = threading.Event(), "m5", []

    class Pool:  # runs each call at once; the actor "dies" at the killer message
        def submit(self, actor_fn, job):
            _, messages, _, contexts = job
            actor = SimpleNamespace(run=SimpleNamespace(
                remote=lambda *args: ("retried", args), options=lambda **kw: SimpleNamespace(remote=lambda *a: (kw, a))))
            options, _ = actor_fn(actor, *job)
            calls.append((len(messages), options))
            return messages, contexts

        def fetch_result_and_return_actor_to_pool(self, future):
            messages, contexts = future
            if len(calls) >= 17:
                stop.set()
            replies = []
            for message, context in zip(messages, contexts):
                if message.metadata.message_id == killer:
                    raise ActorDiedError()
                context.state["seen"] = ConfigRecord({"yes": 1})
                replies.append(Message(RecordDict(), reply_to=message))
            return replies, contexts

        def add_actor_back_to_pool(self, future):
            pass

    class Store:
        def __init__(self):
            self.context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

        def retrieve_context(self, run_id):
            return self.context

        def update_context(self, run_id, context):
            self.context = context

    class Metrics:
        def add_clientapp_runtime(self, seconds):
            pass

    flower_compat.enable_client_batches(16)
    try:
        incoming, outgoing, stores = Queue(), Queue(), {node: Store() for node in range(16)}
        for node in range(16):
            message = Message(RecordDict(), dst_node_id=node, message_type="train")
            message.metadata.__dict__["_message_id"] = f"m{node}"
            incoming.put(message)
        backend = SimpleNamespace(pool=Pool(), _prunus_batch_loader="loader", num_workers=1)
        flower_compat._batch_worker(incoming, outgoing, stores, backend, stop, Metrics())
        replies = {r.metadata.reply_to_message_id: r for r in (outgoing.get_nowait() for _ in range(16))}
        assert outgoing.empty() and sorted(replies) == sorted(f"m{n}" for n in range(16))
        assert [m for m, r in replies.items() if r.has_error()] == [killer]
        assert "ActorDiedError" in replies[killer].error.reason
        assert [node for node, store in stores.items() if "seen" not in store.context.state] == [5]
        assert calls == [(16, {"max_task_retries": 0})] + [(1, "retried")] * 16
        assert flower_compat.batch_stats == {"batches lost": 1, "messages sent again": 16, "messages lost": 1}
    finally:
        flower_compat.enable_client_batches(1)


class _ReplyStore:  # the part of Flower's in-memory LinkState the engine stores replies through
    def __init__(self):
        self.replies = {}

    def store_message_res(self, message):
        self.replies[message.metadata.reply_to_message_id] = message
        return message.metadata.message_id


def _reply_grid():
    """An InMemoryGrid over `_ReplyStore` that records what each pull asked for."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    class Grid(InMemoryGrid):
        def __init__(self):
            super().__init__(state_factory=SimpleNamespace(state=_ReplyStore))
            self.asked = []

        def push_messages(self, messages):
            return [m.metadata.message_id for m in messages]

        def pull_messages(self, message_ids):
            self.asked.append(set(message_ids))
            return [self.state.replies.pop(i) for i in list(message_ids) if i in self.state.replies]

    return Grid()


def _message(message_id, reply_to=""):
    return SimpleNamespace(metadata=SimpleNamespace(message_id=message_id, reply_to_message_id=reply_to))


def test_the_in_memory_grid_wakes_on_each_reply_and_pulls_only_the_arrived_ones():
    grid = _reply_grid()
    flower_compat.wait_for_replies(grid)
    sent = [_message(f"m{i}") for i in range(6)]

    def reply_later():
        for i in range(6):
            time.sleep(0.02)
            grid.state.store_message_res(_message(f"r{i}", reply_to=f"m{i}"))

    worker = threading.Thread(target=reply_later)
    start = time.monotonic()
    worker.start()
    replies = grid.send_and_receive(sent, timeout=30)
    worker.join()
    assert sorted(r.metadata.reply_to_message_id for r in replies) == [f"m{i}" for i in range(6)]
    assert time.monotonic() - start < flower_compat.FULL_LOOK_S  # woken by the replies, not a slow poll
    assert all(len(ids) < 6 for ids in grid.asked)  # never a look at every message in flight
    assert sum(map(len, grid.asked)) == 6


def test_the_in_memory_grid_still_looks_at_every_message_and_keeps_its_timeout():
    grid = _reply_grid()
    flower_compat.wait_for_replies(grid)
    flower_compat.wait_for_replies(grid)  # a second ServerApp on the same LinkState: one hook
    start = time.monotonic()
    assert grid.send_and_receive([_message("a"), _message("b")], timeout=1.2) == []
    assert 1.2 <= time.monotonic() - start < 2.0
    assert {"a", "b"} in grid.asked  # Flower's full look (expired messages become error replies)


def test_other_grids_are_left_alone():
    class OtherGrid:
        def send_and_receive(self, messages, *, timeout=None):
            return "own"

    other = OtherGrid()
    flower_compat.wait_for_replies(other)
    assert other.send_and_receive([]) == "own"


def test_an_array_built_from_its_fields_is_the_array_flowers_constructor_builds():
    import numpy as np
    from flwr.app import Array, ArrayRecord, RecordDict

    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    made = Array(value)
    fast = flower_compat.array(made.dtype, made.shape, made.stype, made.data)
    assert fast.__dict__ == made.__dict__ and fast.is_dirty
    assert fast.object_id == made.object_id and fast.deflate() == made.deflate()
    np.testing.assert_array_equal(fast.numpy(), value)
    # in a record and a message's content, as one built the usual way
    assert RecordDict({"r": ArrayRecord({"a": fast})}).object_id == RecordDict({"r": ArrayRecord({"a": made})}).object_id


def test_the_engine_map_is_awaited_while_the_engine_is_still_registering():
    """The engine's nodes appear one by one before `_register_nodes` returns
    its map: a ServerApp that already sees them all waits for the map instead
    of asking every node (a race that made two runs of one config differ)."""
    import threading

    from flwr.server.superlink.fleet.vce import vce_api

    release = threading.Event()
    original = vce_api._register_nodes
    vce_api._prunus_original__register_nodes = lambda num_nodes, state_factory: release.wait(5) and {7: 0, 9: 1}
    try:
        flower_compat.record_engine_partitions()
        engine = threading.Thread(target=vce_api._register_nodes, args=(2, None))
        engine.start()
        threading.Timer(0.3, release.set).start()
        assert flower_compat.engine_partitions({7, 9}) == {0: 7, 1: 9}
        engine.join()
    finally:
        vce_api._prunus_original__register_nodes = original
        flower_compat.record_engine_partitions(False)
