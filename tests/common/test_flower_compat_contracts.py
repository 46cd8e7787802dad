"""Each of Flower's accelerators (`common/flower_compat.py`) against the stock
Flower it replaces: the same inputs through both, the same observable contract.

Each test switches exactly one accelerator, with the function that switches
it, every other one off. The objects are Flower's own (its in-memory
LinkState and Grid, its engine's dispatcher, worker and reply threads, its
Ray backend and actor pool, Ray's driver thread); Ray itself runs only where
the accelerator acts on Ray (a local Ray of one CPU, one or two actors).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from queue import Queue
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import ray
from flwr.app import Array, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.proto.task_pb2 import Task
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend
from flwr.server.superlink.fleet.vce.metrics import VceMetrics
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.simulation.ray_transport import ray_actor
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from prunus.common import flower_compat
from prunus.common.flower_records import to_flower
from prunus.common.params import to_record
from prunus.common.payload import Content

RUN_ID = 1  # the run the `task_identity` fixture creates messages in
FAILURES = ("partition 1 failed", "actor died")  # the causes the tests provoke, found in error replies' reasons


def _all_off() -> None:
    flower_compat.enable_fast_dispatch(False)
    flower_compat.enable_fast_submit(False)
    flower_compat.enable_actor_pipeline(1)
    flower_compat.enable_client_batches(1)
    flower_compat.record_engine_partitions(False)
    flower_compat.enable_actor_share(1)
    flower_compat.enable_clean_actor_shutdown(False)
    flower_compat.route_ray_driver_messages(None)
    flower_compat.enable_fast_array(False)


@pytest.fixture(autouse=True)
def stock_flower() -> Iterator[None]:
    """Every accelerator off around each test (the array shortcut back on
    after: it is on from import). The Grid's reply wait is per Grid: off
    unless a test turns it on for its own."""
    _all_off()
    yield
    _all_off()
    flower_compat.enable_fast_array(True)


@pytest.fixture
def superlink(task_identity: Any) -> None:
    """Messages created as the ServerApp creates them: from the SuperLink, in run 1."""
    task_identity.node_id = SUPERLINK_NODE_ID


def _run() -> Run:
    run = Run.create_empty(run_id=RUN_ID)
    run.primary_task_id, run.federation_id = 1, NOOP_FEDERATION_ID
    return run


def _factory() -> LinkStateFactory:
    """An in-memory LinkState factory with the run registered, as `run_simulation` makes it."""
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    state.run_ids[RUN_ID] = RunRecord(run=_run())
    state.task_store[1] = Task(task_id=1, run_id=RUN_ID)
    return factory


def _link(num_nodes: int) -> tuple[Any, list[int], InMemoryGrid]:
    """A Simulation Engine's LinkState with `num_nodes` nodes (in partition
    order) and the ServerApp's Grid on it."""
    factory = _factory()
    mapping = vce_api._register_nodes(num_nodes, factory)
    grid = InMemoryGrid(factory)
    grid.set_run(_run())
    return factory.state(), sorted(mapping, key=mapping.__getitem__), grid


def _client_app(hold: Callable[[], Any] | None = None) -> ClientApp:
    """A ClientApp that counts its messages in the node's context; partition 1
    raises (after touching its context), partition 2 first calls `hold`."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        partition = context.node_config["partition-id"]
        count = context.state["seen"]["count"] + 1 if "seen" in context.state else 1
        context.state["seen"] = ConfigRecord({"count": count})
        if partition == 1:
            raise ValueError("partition 1 failed")
        if partition == 2 and hold is not None:
            hold()
        return Message(RecordDict({"reply": ConfigRecord({"partition": partition, "count": count})}), reply_to=message)

    return app


def _summary(label: Any, reply: Message) -> tuple[Any, int | None, Any]:
    """A reply as a ServerApp sees it: its content, or its error's code and cause."""
    if reply.has_error():
        return label, reply.error.code, [cause for cause in FAILURES if cause in reply.error.reason]
    return label, None, dict(reply.content["reply"])


# --------------------------------------------------------------- fast dispatch
class _OnePoll(threading.Event):
    """A dispatcher's stop event that lets it make exactly one poll (it stops at its first wait)."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


def _dispatch() -> tuple[list[set[str]], list[tuple[str, int]], list[str]]:
    """Six messages through the installed dispatcher, one poll at a time: what
    each poll queued, the Grid's replies to all six after, and the ones marked delivered."""
    state, nodes, grid = _link(4)
    mapping = {node: partition for partition, node in enumerate(nodes[:3])}  # the 4th node is not this engine's
    plan = [("p0-a", 0, None), ("p0-b", 0, None), ("p0-c", 0, None), ("p1", 1, None), ("p2-expired", 2, 0.05),
            ("p3-elsewhere", 3, None)]  # fmt: skip
    messages = {label: Message(RecordDict(), dst_node_id=nodes[p], message_type="train", ttl=ttl)
                for label, p, ttl in plan}  # fmt: skip
    grid.push_messages(messages.values())
    label_of = {message.metadata.message_id: label for label, message in messages.items()}
    time.sleep(0.1)  # p2's message expires
    queue: Queue[Message] = Queue()
    polls = []
    for _ in range(4):
        vce_api.add_messages_to_queue(state, queue, mapping, _OnePoll())
        polls.append({label_of[queue.get_nowait().metadata.message_id] for _ in range(queue.qsize())})
    replies = sorted((label_of[r.metadata.reply_to_message_id], r.error.code) for r in grid.pull_messages(label_of))
    return polls, replies, sorted(label for label, message in messages.items() if message.metadata.delivered_at)


def test_fast_dispatch_queues_what_flowers_dispatcher_queues_poll_by_poll(superlink):
    """One message per node per poll, oldest first; an expired message never
    queued (the Grid gets its error reply); nothing for a node not the engine's."""
    stock = _dispatch()
    assert stock == ([{"p0-a", "p1"}, {"p0-b"}, {"p0-c"}, set()], [("p2-expired", ErrorCode.MESSAGE_UNAVAILABLE)],
                     ["p0-a", "p0-b", "p0-c", "p1"])  # fmt: skip
    assert flower_compat.enable_fast_dispatch()
    assert vce_api.add_messages_to_queue is flower_compat._add_messages_to_queue
    assert _dispatch() == stock


# ------------------------------------------------------------------ reply wait
class _InProcessBackend:
    """Flower's engine backend without Ray: Flower's own actor code run in the
    worker's thread (Flower's worker takes any `Backend`)."""

    num_workers = 2

    def __init__(self, app: ClientApp) -> None:
        self.app = app

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        _, reply, context = ray_actor.VirtualClientEngineActor().run(lambda: self.app, message, "", context)
        return reply, context


@contextmanager
def _engine(state: Any, nodes: list[int], hang: threading.Event) -> Iterator[None]:
    """Flower's Simulation Engine threads (dispatcher, two workers, reply store)
    on `state`, partition 2's client hanging until the engine stops."""
    mapping = {node: partition for partition, node in enumerate(nodes)}
    stores = vce_api._register_node_info_stores(mapping, _run())
    stop, incoming, outgoing = threading.Event(), Queue(), Queue()
    backend = _InProcessBackend(_client_app(hang.wait))
    threads = [threading.Thread(target=vce_api.add_messages_to_queue, args=(state, incoming, mapping, stop)),
               threading.Thread(target=vce_api.put_message_into_state, args=(state, outgoing, stop)),
               *(threading.Thread(target=vce_api.worker, args=(incoming, outgoing, stores, backend, stop, VceMetrics()))
                 for _ in range(backend.num_workers))]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        hang.set()
        for thread in threads:
            thread.join()


def _exchange(wait: bool, ttl: float | None, timeout: float) -> tuple[list[tuple], float]:
    """One `send_and_receive` to partitions 0-2 (1 raises, 2 hangs, its message
    living `ttl`) over Flower's engine threads: the replies by partition, and
    the seconds it took."""
    state, nodes, grid = _link(3)
    if wait:
        assert flower_compat.wait_for_replies(grid)
    messages = [Message(RecordDict(), dst_node_id=node, message_type="train", ttl=ttl if partition == 2 else None)
                for partition, node in enumerate(nodes)]  # fmt: skip
    with _engine(state, nodes, threading.Event()):
        started = time.monotonic()
        replies = grid.send_and_receive(messages, timeout=timeout)
        took = time.monotonic() - started
    partition_of = {message.metadata.message_id: partition for partition, message in enumerate(messages)}
    return sorted(_summary(partition_of[r.metadata.reply_to_message_id], r) for r in replies), took


REPLIED = [(0, None, {"partition": 0, "count": 1}), (1, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, ["partition 1 failed"])]


def test_reply_wait_returns_the_replies_flowers_grid_returns_and_an_expired_messages_error(superlink):
    """The hung client's message expires: Flower's error reply for it ends the
    wait, long before the timeout, as with Flower's polling."""
    stock, stock_s = _exchange(False, ttl=0.6, timeout=20)
    woken, woken_s = _exchange(True, ttl=0.6, timeout=20)
    assert stock == woken == [*REPLIED, (2, ErrorCode.MESSAGE_UNAVAILABLE, [])]
    assert stock_s < 5 and woken_s < 5


def test_reply_wait_keeps_flowers_timeout_with_the_replies_that_arrived(superlink):
    stock, stock_s = _exchange(False, ttl=None, timeout=1.0)
    woken, woken_s = _exchange(True, ttl=None, timeout=1.0)
    assert stock == woken == REPLIED
    assert 1.0 <= stock_s < 3 and 1.0 <= woken_s < 3


# ------------------------------------------------------- the engine over Ray
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A fresh local Ray of one CPU (never a cluster /tmp/ray recorded), the
    workers given this driver's import path as Flower's backend gives them."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})  # fmt: skip
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def build(ray_cluster: None) -> Iterator[Callable[..., RayBackend]]:
    """Builds Flower's Ray backend (its pool, its ClientApp loader) as the
    engine does, client actors restarted and their messages retried as prunus
    configures them. One at a time (one CPU): building one, and the test's
    end, kill the previous one's actors."""
    built: list[RayBackend] = []

    def end_previous() -> None:
        while built:
            pool = built.pop().pool
            for actor in {a._actor_id: a for a in [*pool.pool, *pool._future_to_actor.values()]}.values():
                ray.kill(actor, no_restart=True)

    def make(app: ClientApp, num_cpus: float = 1.0) -> RayBackend:
        end_previous()
        backend = RayBackend({"client_resources": {"num_cpus": num_cpus, "max_restarts": 1, "max_task_retries": 1}})
        backend.build(lambda: app)
        built.append(backend)
        return backend

    yield make
    end_previous()


def _through_engine(backend: Any, make_message: Callable[..., Message],
                    rounds: int = 2) -> tuple[list[tuple], list[int]]:
    """`rounds` rounds of one message to each of partitions 0-2 through Flower's
    worker threads (`vce_api.worker` as installed) on `backend`: each reply,
    and the count each node's context holds after."""
    nodes = [101, 102, 103]
    stores = vce_api._register_node_info_stores({node: p for p, node in enumerate(nodes)}, _run())
    replies = []
    for round_ in range(rounds):
        incoming, outgoing, stop = Queue(), Queue(), threading.Event()
        for partition, node in enumerate(nodes):
            incoming.put(make_message(RecordDict(), node, message_id=f"r{round_}-p{partition}"))
        args = (incoming, outgoing, stores, backend, stop, VceMetrics())
        workers = [threading.Thread(target=vce_api.worker, args=args) for _ in range(backend.num_workers)]
        for worker in workers:
            worker.start()
        arrived = [outgoing.get(timeout=60) for _ in nodes]
        stop.set()
        for worker in workers:
            worker.join()
        replies += sorted(_summary(reply.metadata.reply_to_message_id, reply) for reply in arrived)
    contexts = [stores[node].retrieve_context(run_id=RUN_ID).state for node in nodes]
    return replies, [state["seen"]["count"] if "seen" in state else 0 for state in contexts]


@pytest.fixture(scope="module")
def stock_runs() -> dict[str, Any]:
    return {}


@pytest.fixture
def stock_engine(stock_runs: dict[str, Any], build: Callable[..., RayBackend],
                 make_train_message: Callable[..., Message]) -> tuple[list, list]:
    """Flower's own engine on Ray (run once a module), checked to do what the
    comparisons rely on: each reply, the failing client's error, its context
    left as it was."""
    if "engine" not in stock_runs:
        stock_runs["engine"] = _through_engine(build(_client_app()), make_train_message)
    replied = [(f"r{r}-p{p}", None, {"partition": p, "count": r + 1}) for r in (0, 1) for p in (0, 2)]
    failed = [(f"r{r}-p1", ErrorCode.CLIENT_APP_RAISED_EXCEPTION, ["partition 1 failed"]) for r in (0, 1)]
    assert stock_runs["engine"] == (sorted(replied + failed), [2, 0, 2])
    return stock_runs["engine"]


@pytest.mark.slow
def test_fast_submit_gives_the_replies_and_contexts_of_flowers_backend(stock_engine, build, make_train_message):
    assert flower_compat.enable_fast_submit()
    backend = build(_client_app())
    assert isinstance(backend.app_fn, ray.ObjectRef)  # the loader is Ray's stored one
    assert _through_engine(backend, make_train_message) == stock_engine


@pytest.mark.slow
def test_the_actor_pipeline_gives_the_replies_and_contexts_of_flowers_pool(stock_engine, build, make_train_message):
    assert flower_compat.enable_actor_pipeline(2)
    backend = build(_client_app())
    assert backend.num_workers == 2 and len({a._actor_id for a in backend.pool.pool}) == 1  # one actor, two in flight
    assert _through_engine(backend, make_train_message) == stock_engine
    assert len(backend.pool.pool) == 2  # every entry back in the pool, the failed calls' too


@pytest.mark.slow
def test_client_batches_give_the_replies_and_contexts_of_flowers_worker(stock_engine, build, make_train_message):
    """A ClientApp that raises gets Flower's error reply, and its node keeps
    the context it had before the message, as with Flower's worker."""
    assert flower_compat.enable_client_batches(16)
    assert _through_engine(build(_client_app()), make_train_message) == stock_engine


class _FailingPool:
    """An actor pool whose actor calls fail (the actor died), as Flower's backend
    submits to it; it counts the actors taken and not given back."""

    num_actors = 1

    def __init__(self) -> None:
        self.taken = 0

    def submit(self, actor_fn: Any, job: Any) -> object:
        self.taken += 1
        return object()

    def fetch_result_and_return_actor_to_pool(self, future: Any) -> Any:
        raise RuntimeError("actor died")

    def add_actor_back_to_pool(self, future: Any) -> None:
        self.taken -= 1


def _failing_backend() -> RayBackend:
    backend = RayBackend.__new__(RayBackend)  # built as `build` leaves it, over a pool whose calls fail
    backend.pool, backend.app_fn = _FailingPool(), lambda: _client_app()
    return backend


@pytest.mark.slow
def test_client_batches_answer_a_failed_actor_call_as_flowers_worker_does(ray_cluster, make_train_message):
    """Every message gets Flower's error reply (code, reason), no context
    changes, and the actor goes back to the pool."""
    stock_backend = _failing_backend()
    stock = _through_engine(stock_backend, make_train_message, rounds=1)
    assert stock == ([(f"r0-p{p}", ErrorCode.UNKNOWN, ["actor died"]) for p in range(3)], [0, 0, 0])
    assert flower_compat.enable_client_batches(16)
    backend = _failing_backend()
    assert _through_engine(backend, make_train_message, rounds=1) == stock
    assert stock_backend.pool.taken == backend.pool.taken == 0


# -------------------------------------------------------------- actor shutdown
def _alive(actor: Any) -> bool:
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=60)
    except ray.exceptions.RayActorError:
        return False
    return True


def _shutdown(build: Callable[..., RayBackend], make_message: Callable[..., Message]) -> tuple[bool, bool, tuple]:
    """Two client actors, one idle in the pool and one running a message (out
    of the pool), told to terminate: whether each is alive after, and the
    reply of the message in flight."""
    backend = build(_client_app(functools.partial(time.sleep, 1.0)), num_cpus=0.5)
    pool = backend.pool
    assert len(pool.pool) == 2
    context = Context(run_id=RUN_ID, node_id=103, node_config={"partition-id": 2}, state=RecordDict(), run_config={})
    future = pool.submit(lambda actor, app_fn, message, cid, ctx: actor.run.remote(app_fn, message, cid, ctx),
                         (backend.app_fn, make_message(RecordDict(), 103, message_id="in-flight"), "2", context))
    running, idle = pool._future_to_actor[future], pool.pool[0]
    pool.terminate_all_actors()
    reply, _ = pool.fetch_result_and_return_actor_to_pool(future)
    return _alive(running), _alive(idle), _summary("in-flight", reply)


@pytest.mark.slow
def test_clean_shutdown_ends_the_actors_flowers_shutdown_ends(build, make_train_message):
    """The pool's idle actors end for good (no restart, though restarts are
    configured); an actor running a message is not the pool's to end: its
    reply arrives."""
    stock = _shutdown(build, make_train_message)
    assert stock == (True, False, ("in-flight", None, {"partition": 2, "count": 1}))
    assert flower_compat.enable_clean_actor_shutdown()
    assert _shutdown(build, make_train_message) == stock


# ----------------------------------------------------------------- actor share
CLUSTER = [{"Resources": {"CPU": 8.0}}, {"Resources": {}}, {"Resources": {"CPU": 4.0, "GPU": 1.0}}]  # a node detached


def _capacity(resources: dict[str, float]) -> int:
    """The number of actors Flower's pool creates for these client resources."""
    return ray_actor.BasicActorPool(ray_actor.ClientAppActor, resources, {}).actors_capacity


@pytest.mark.parametrize(("resources", "fits"), [({"num_cpus": 1}, 12), ({"num_cpus": 1, "num_gpus": 0.5}, 2)])
def test_actor_share_sizes_flowers_pool_to_a_share_of_flowers_own_sizing(monkeypatch, resources, fits):
    """A third of the actors that fit, never more than Flower's, at least one."""
    monkeypatch.setattr(ray_actor.ray, "nodes", lambda: CLUSTER)
    stock = _capacity(resources)
    assert flower_compat.enable_actor_share(3)
    assert (stock, _capacity(resources)) == (fits, max(1, fits // 3))


def test_actor_share_fails_as_flower_does_where_no_actor_fits(monkeypatch):
    monkeypatch.setattr(ray_actor.ray, "nodes", lambda: CLUSTER)
    with pytest.raises(ValueError, match="ActorPool is empty") as stock:
        _capacity({"num_cpus": 16})
    assert flower_compat.enable_actor_share(3)
    with pytest.raises(ValueError) as shared:
        _capacity({"num_cpus": 16})
    assert str(shared.value) == str(stock.value)


# ---------------------------------------------------------- engine partitions
def test_engine_partitions_are_what_flowers_engine_registers_and_each_node_would_answer():
    """The same registration as Flower's (every node online in the run, one
    partition each), and the recorded map is what asking each node's context
    for its partition gives; with it off nothing is recorded (the server asks)."""
    outcomes = []
    for on in (False, True):
        assert flower_compat.record_engine_partitions(on) is on
        factory = _factory()
        mapping = vce_api._register_nodes(3, factory)
        assert factory.state().get_nodes(RUN_ID) == set(mapping)
        stores = vce_api._register_node_info_stores(mapping, _run())
        answers = {stores[node].retrieve_context(run_id=RUN_ID).node_config["partition-id"]: node for node in mapping}
        outcomes.append((sorted(mapping.values()), flower_compat.engine_partitions(set(mapping)), answers))
    (stock_partitions, stock_known, _), (partitions, known, answers) = outcomes
    assert stock_partitions == partitions == [0, 1, 2]
    assert stock_known is None and known == answers


# ------------------------------------------------------ Ray's driver messages
class _ErrorChannel:
    """What Ray's driver thread `listen_error_messages` reads of its worker: a
    subscriber handing out `errors`, then stopping the thread."""

    def __init__(self, errors: list[str], stop: threading.Event) -> None:
        self.errors, self.stop = errors, stop
        self.gcs_error_subscriber = self
        self.current_job_id = SimpleNamespace(binary=lambda: b"job")

    def subscribe(self) -> None:
        pass

    def poll(self) -> tuple[None, dict[str, Any] | None]:
        if not self.errors:
            self.stop.set()
            return None, None
        return None, {"job_id": None, "error_message": self.errors.pop(0)}


def _notices(errors: list[str]) -> None:
    """Ray's own driver thread, fed `errors` from the cluster's error channel."""
    from ray._private import worker

    stop = threading.Event()
    worker.listen_error_messages(_ErrorChannel(errors, stop), stop)


def test_ray_driver_messages_go_to_the_log_line_for_line_instead_of_the_console(capsys, caplog):
    logger = logging.getLogger("prunus.test-ray-driver")
    caplog.set_level(logging.WARNING, logger=logger.name)
    notices = ["Task ClientAppActor.terminate failed, it will be retried", "A worker died or was killed"]
    _notices([f"stock: {notices[0]}", f"stock: {notices[1]}"])
    printed = capsys.readouterr().out
    assert all(f"stock: {notice}" in printed for notice in notices)
    assert flower_compat.route_ray_driver_messages(logger)
    _notices([f"routed: {notices[0]}", f"routed: {notices[1]}"])
    assert "routed" not in capsys.readouterr().out
    logged = [r.getMessage() for r in caplog.records if r.name == logger.name]  # (with any notice of Ray's own)
    assert [line for line in logged if "routed" in line] == [f"(raylet) routed: {notice}" for notice in notices]
    assert not any("stock" in line for line in logged)


def test_ray_driver_messages_on_either_stream_reach_the_log(capsys, caplog):
    """What Ray would print on stderr (a worker's error output) is logged too, each line."""
    from ray._private import worker

    logger = logging.getLogger("prunus.test-ray-driver")
    caplog.set_level(logging.WARNING, logger=logger.name)
    batch = {"lines": ["Traceback (most recent call last):", "ValueError: broke"], "pid": 4321, "is_err": True}
    worker.print_to_stdstream(dict(batch), ignore_prefix=False)
    stock = capsys.readouterr()
    assert all(line in stock.err for line in batch["lines"]) and "broke" not in stock.out
    assert flower_compat.route_ray_driver_messages(logger)
    worker.print_to_stdstream(dict(batch), ignore_prefix=False)
    assert capsys.readouterr().err == ""
    logged = [r.getMessage() for r in caplog.records if r.name == logger.name and r.getMessage().startswith("(4321)")]
    assert logged == [f"(4321) {line}" for line in batch["lines"]]


# ------------------------------------------------------------------ fast array
VALUES = {"2d": np.arange(12, dtype=np.float32).reshape(3, 4), "empty": np.array([], dtype=np.int64),
          "0d": np.array(2.5), "bool": np.array([True, False])}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_fast_array_builds_what_flowers_constructor_builds(monkeypatch, value):
    """The same Array (fields, id, bytes on the wire, values) without running
    the constructor, which the switched-off path does run."""
    constructed = []
    init = Array.__init__
    monkeypatch.setattr(Array, "__init__", lambda self, *a, **k: constructed.append(1) or init(self, *a, **k))
    made = Array(value)
    fields = (made.dtype, made.shape, made.stype, made.data)
    before = len(constructed)
    stock = flower_compat.array(*fields)
    assert len(constructed) == before + 1
    assert flower_compat.enable_fast_array()
    before = len(constructed)  # after the shortcut's one check of the constructor (the first time)
    fast = flower_compat.array(*fields)
    assert len(constructed) == before
    assert fast.__dict__ == stock.__dict__ and fast.is_dirty == stock.is_dirty
    assert fast.object_id == stock.object_id and fast.deflate() == stock.deflate()
    np.testing.assert_array_equal(fast.numpy(), value)


def test_fast_array_gives_the_same_flower_records():
    content = Content({"arrays": to_record({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.arange(3)})})
    stock = to_flower(content)
    assert flower_compat.enable_fast_array()
    assert to_flower(content).object_id == stock.object_id
