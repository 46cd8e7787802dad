"""Flower's speed-ups: optional accelerators over its internals, each checked before it engages.

prunus runs on Flower's public Message API (`common.flower_records` maps its
content onto Flower's records). Stock Flower works; these replace a few of
Flower's (and Ray's) internal functions with faster ones:

* a faster dispatcher for the in-process Simulation Engine (`enable_fast_dispatch`);
* the ClientApp sent to Ray once per run, not with every message (`enable_fast_submit`);
* more than one message in flight per client actor (`enable_actor_pipeline`);
* several messages to a client actor in one Ray call (`enable_client_batches`);
* the simulation engine's own node-to-partition map, so that a ServerApp in
  the same process need not ask every node (`record_engine_partitions`);
* sizing the Ray actor pool to a share of the cluster (`enable_actor_share`);
* actors stopped without a retried shutdown task (`enable_clean_actor_shutdown`);
* the in-memory Grid woken by each reply instead of polling (`wait_for_replies`);
* sending the messages Ray's driver prints on its own to a log instead
  (`route_ray_driver_messages`);
* a Flower `Array` built from fields already known to be right, without the
  constructor's argument checks (`array`; `enable_fast_array`).

Internals move between releases, so each accelerator first checks what it
relies on (`Needs`: the functions, their parameters, the attributes their
objects set; for `array`, that it builds what the constructor builds). Where
something is missing it leaves stock Flower in place and logs one warning
line naming itself and what is missing; nothing here raises, and importing
this module imports neither Flower nor Ray. Tested against flwr 1.41.0 and
1.42.0: `tests/common/test_flower_compat.py` checks the preconditions, and
`tests/common/test_flower_compat_contracts.py` runs each accelerator and the
stock Flower it replaces on the same inputs, one accelerator switched at a time.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import threading
import time
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any, Callable
from uuid import uuid4

log = logging.getLogger("prunus")


# ----------------------------------------------------------- preconditions
@dataclass(frozen=True)
class Needs:
    """One internal an accelerator relies on: `module:qualname`, the leading
    parameters it must take, and the attributes its source sets on `self`
    (for a class: its `__init__`'s)."""

    target: str
    params: tuple[str, ...] | None = None
    sets: tuple[str, ...] = ()

    def unmet(self) -> str:
        """What is missing ("" if nothing)."""
        module, _, qualname = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split(".") if qualname else ():
                obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - missing module or attribute: the need is unmet
            return f"no {self.target}"
        if self.params is not None:
            try:
                names = tuple(inspect.signature(obj).parameters)[: len(self.params)]
            except (TypeError, ValueError):
                names = ()
            if names != self.params:
                return f"{self.target} takes ({', '.join(names)}), not ({', '.join(self.params)})"
        if self.sets:
            try:
                source = inspect.getsource(obj.__init__ if inspect.isclass(obj) else obj)
            except (OSError, TypeError):
                return f"no source of {self.target} to check"
            missing = [name for name in self.sets if f"self.{name}" not in source]
            if missing:
                return f"{self.target} sets no {', '.join(missing)}"
        return ""


_warned: set[str] = set()


def ready(name: str, needs: tuple[Needs, ...]) -> bool:
    """Whether accelerator `name` can engage; if not, one warning line (once)."""
    unmet = [m for m in (need.unmet() for need in needs) if m]
    if unmet and name not in _warned:
        _warned.add(name)
        log.warning("Flower accelerator %s is off, stock Flower in place (flwr %s): %s",
                    name, _flower_version(), "; ".join(unmet))
    return not unmet


def _flower_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flwr")
    except PackageNotFoundError:
        return "not installed"


def _install(name: str, needs: tuple[Needs, ...], owner: Callable[[], Any], attribute: str,
             replacement: Callable[[Any], Any] | None) -> bool:
    """Put `replacement(original)` in `owner().attribute`, or the original
    back when `replacement` is None or the needs are unmet (the original is
    kept on the owner the first time). Returns whether the accelerator is on."""
    on = replacement is not None and ready(name, needs)
    try:
        target = owner()
    except ImportError:  # nothing of Flower's to patch or restore
        return False
    saved = f"_prunus_original_{attribute}"
    if not hasattr(target, saved):
        if not hasattr(target, attribute):
            return False
        setattr(target, saved, getattr(target, attribute))
    original = getattr(target, saved)
    setattr(target, attribute, replacement(original) if on else original)
    return on


def _vce_api() -> Any:
    from flwr.server.superlink.fleet.vce import vce_api

    return vce_api


def _ray_actor() -> Any:
    from flwr.simulation.ray_transport import ray_actor

    return ray_actor


_VCE = "flwr.server.superlink.fleet.vce.vce_api"
_POOL = "flwr.simulation.ray_transport.ray_actor:BasicActorPool"
_LINKSTATE = "flwr.server.superlink.linkstate.in_memory_linkstate:InMemoryLinkState"
_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend:RayBackend"


# --------------------------------------------------------------- fast dispatch
# Flower's engine moves messages from its in-memory LinkState to the Ray actor
# queue with a loop that, every 0.1 s, asks *every* node for a message; each
# ask (`get_message_ins`) checks every message in flight (expiry, and that both
# ends are in the federation), so a sweep costs nodes x messages checks,
# holding the GIL: with one SuperNode per user that is most of a round
# (`benchmarks/flower_dispatch.py` measures it). The replacement makes one
# pass over the messages per poll: each undelivered message gets the same
# check (`_check_stored_messages`, which drops an expired or foreign one), is
# marked delivered and goes to the queue, at most one per node per poll as
# with Flower's `limit=1`; the same queue, the same stop event.
POLL_INTERVAL_S = 0.1


def _add_messages_to_queue(state: Any, queue: Queue, nodes_mapping: dict[int, int], f_stop: threading.Event) -> None:
    """Put undelivered messages in the actor queue, in one pass over the store per poll."""
    from flwr.supercore.date import now

    while not f_stop.is_set():
        batch, nodes = [], set()
        with state.lock:  # the in-memory LinkState guards its stores with this lock
            for message_id, message in list(state.message_ins_store.items()):
                node = message.metadata.dst_node_id
                if message.metadata.delivered_at != "" or node in nodes or node not in nodes_mapping:
                    continue
                state._check_stored_messages({message_id})
                if message_id in state.message_ins_store:
                    batch.append(message)
                    nodes.add(node)
            delivered_at = now().isoformat()
            for message in batch:
                message.metadata.delivered_at = delivered_at
        for message in batch:
            queue.put(message)
        f_stop.wait(POLL_INTERVAL_S)


FAST_DISPATCH_NEEDS = (
    Needs(f"{_VCE}:add_messages_to_queue", ("state", "queue", "nodes_mapping", "f_stop")),
    Needs(_LINKSTATE, sets=("lock", "message_ins_store")),
    Needs(f"{_LINKSTATE}._check_stored_messages"),
    Needs("flwr.app:Metadata.delivered_at"),
    Needs("flwr.supercore.date:now"),
)


def enable_fast_dispatch(on: bool = True) -> bool:
    """Install (or remove) the fast dispatcher in Flower's engine module."""
    return _install("fast-dispatch", FAST_DISPATCH_NEEDS, _vce_api, "add_messages_to_queue",
                    (lambda _: _add_messages_to_queue) if on else None)


# ----------------------------------------------------------------- fast submit
# Flower's Ray backend passes the ClientApp's loader with every message
# (`actor.run.remote(app_fn, message, cid, context)`). The loader is a closure
# over the ClientApp, so Ray cloudpickles the app, its handlers and their
# globals again for each message (scanning `sys.modules` for submodules each
# time). Putting the loader in Ray's object store once and passing its
# reference instead does that work once per run; Ray hands every call the
# stored loader.
FAST_SUBMIT_NEEDS = (Needs(f"{_BACKEND}.build", ("self", "app_fn"), sets=("app_fn",)),
                     Needs(f"{_BACKEND}.process_message"), Needs("ray:put"))


def _fast_build(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def build(self: Any, app_fn: Any) -> None:
        import ray

        original(self, app_fn)
        self.app_fn = ray.put(app_fn)  # `process_message` passes it on; Ray resolves it in the actor

    return build


def enable_fast_submit(on: bool = True) -> bool:
    """Store the ClientApp loader in Ray's object store once (off: Flower's own way)."""
    return _install("fast-submit", FAST_SUBMIT_NEEDS, lambda: _backend_class(), "build", _fast_build if on else None)


def _backend_class() -> Any:
    from flwr.server.superlink.fleet.vce.backend import raybackend

    return raybackend.RayBackend


# -------------------------------------------------------------- actor pipeline
# Flower runs one driver thread per client actor, each submitting a message
# and blocking until its reply: an actor idles while the driver deserialises
# its reply, submits its next message and serialises that one. With a depth
# of N each actor appears N times in the pool, so N threads keep a message
# waiting in its queue while it runs one (Ray runs an actor's tasks one at a
# time, in order). Results do not depend on the order: a client's work is a
# function of (seed, round, partition) and the server sorts replies.
POOL_NEEDS = (Needs(_POOL, sets=("pool", "num_actors", "create_actor_fn")),
              Needs(f"{_POOL}.add_actors_to_pool", ("self", "num_actors")))


def enable_actor_pipeline(depth: int = 2) -> bool:
    """Keep `depth` messages in flight per client actor (1: Flower's own way)."""

    def pipelined(_: Any) -> Callable[[Any, int], None]:
        def add_actors_to_pool(self: Any, num_actors: int) -> None:
            for _ in range(num_actors):
                self.pool.extend([self.create_actor_fn()] * depth)
            self.num_actors += num_actors * depth  # the backend runs one thread per entry

        return add_actors_to_pool

    return _install("actor-pipeline", POOL_NEEDS, lambda: _ray_actor().BasicActorPool, "add_actors_to_pool",
                    pipelined if depth > 1 else None)


# ------------------------------------------------------------- client batches
# Flower makes one Ray actor call per message, and with a broadcast of a
# model's worth per message the call itself (Ray copying each message's
# broadcast into its object store, then fetching each reply) outweighs a
# client's work. With batches of N, a driver thread takes up to N queued
# messages, sends them in one call and receives their replies in one: one
# object-store copy of a broadcast that the messages share (pickle writes a
# shared object once), one round trip. Each message still runs through the
# ClientApp with its own Context, and a ClientApp error becomes that
# message's error reply, its node's Context left as it was, as in Flower's
# worker. A message batched behind a hung client waits with it (as in the
# pipeline).
#
# An actor that dies in a call (the OOM killer, a crash in native code)
# takes the whole batch's replies with it. Ray's own retry would run the
# whole batch again, the message that killed the actor included, until the
# actor's restarts are spent, and then fail all of them. So a batch call is
# not retried by Ray: its messages go again one per call (each with Ray's
# retries, as Flower sends a message), and only a message that kills its
# actor on its own fails. The messages that had finished run again; a client
# reads its state from before the round (`client.state_store` keeps it), so
# they give the same replies. An actor dead for good is replaced in the pool.
_batch_size = 1
READY_WAIT_S = 60.0  # how long a dead actor's restart may take before it counts as alive anyway
# what the batches went through this run: calls lost with their actor,
# messages sent again alone, actors replaced (in run.log at the run's end)
batch_stats: dict[str, int] = {}
_replacing = threading.Lock()


class _BatchLoader:
    """Stands in for the ClientApp loader in an actor call whose message and
    context are lists: the "app" it loads runs each pair through the real one."""

    def __init__(self, app_fn: Any) -> None:
        self.app_fn = app_fn  # Flower's loader, or its object-store reference (fast submit)

    def __call__(self) -> Any:
        import ray

        app_fn = ray.get(self.app_fn) if isinstance(self.app_fn, ray.ObjectRef) else self.app_fn
        app = app_fn()

        def run_all(message: list[Any], context: list[Any]) -> list[Any]:
            done = [_run_one(app, one, ctx) for one, ctx in zip(message, context, strict=True)]
            context[:] = [ctx for _, ctx in done]  # the list the actor returns as the updated contexts
            return [reply for reply, _ in done]

        return run_all


def _run_one(app: Any, message: Any, context: Any) -> tuple[Any, Any]:
    """The ClientApp's reply to one message and the context it leaves; or the
    error reply Flower's worker would make (with the error's type, which
    Flower's drops) and None, since Flower's worker keeps no context from a
    ClientApp that raised."""
    from flwr.clientapp.client_app import ClientAppException
    from flwr.common.constant import ErrorCode

    try:
        return app(message=message, context=context), context
    except Exception as ex:  # noqa: BLE001 - a client's failure is its reply, as in Flower's worker
        error = ClientAppException(f"{type(ex).__name__}: {ex}")
        return _error_reply(message, error, ErrorCode.CLIENT_APP_RAISED_EXCEPTION), None


def _error_reply(message: Any, ex: Exception, code: int | None = None) -> Any:
    """The error reply Flower's worker makes for `message` (code: UNKNOWN unless given)."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.UNKNOWN if code is None else code, reason=f"{type(ex)}:<'{ex}'>"),
                   reply_to=message)


def _lost() -> tuple[type[BaseException], ...]:
    """Ray's errors for a call that died with its actor, worker or node."""
    from ray import exceptions

    return exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.OutOfMemoryError, \
        exceptions.NodeDiedError


def _count(what: str, n: int = 1) -> None:
    batch_stats[what] = batch_stats.get(what, 0) + n


def _run_batch(backend: Any, messages: list[Any], contexts: list[Any]) -> tuple[list[Any], list[Any]]:
    """Replies and updated contexts of `messages`, in order; a batch whose
    actor died goes again one message per call, and a message lost alone
    gets its error reply (and keeps its context)."""
    if len(messages) == 1:
        return _process_batch(backend, messages, contexts)
    try:
        return _process_batch(backend, messages, contexts, ray_retries=False)
    except _lost() as ex:
        log.info("a client actor died in a batch of %d messages; each goes again alone: %s: %s",
                 len(messages), type(ex).__name__, ex)
        _count("batches lost")
        _count("messages sent again", len(messages))
    replies, updated = [], []
    for message, context in zip(messages, contexts):
        try:
            (reply,), (after,) = _process_batch(backend, [message], [context])
        except Exception as ex:  # noqa: BLE001 - this message's error reply, as Flower's worker gives
            reply, after = _error_reply(message, ex), None
            _count("messages lost")
        replies.append(reply)
        updated.append(after)
    return replies, updated


def _process_batch(backend: Any, messages: list[Any], contexts: list[Any],
                   ray_retries: bool = True) -> tuple[list[Any], list[Any]]:
    """One actor call for `messages`: their replies and updated contexts, in
    order (as the backend does: the actor goes back to the pool whatever
    happens, or a new one in its place if it died for good). `ray_retries`:
    whether Ray runs the call again on the restarted actor if the actor dies."""
    import ray

    if not hasattr(backend, "_prunus_batch_loader"):
        backend._prunus_batch_loader = ray.put(_BatchLoader(backend.app_fn))
    pool = backend.pool

    def call(actor: Any, fn: Any, msgs: list[Any], cid: str, ctxs: list[Any]) -> Any:
        method = actor.run if ray_retries else actor.run.options(max_task_retries=0)
        return method.remote(fn, msgs, cid, ctxs)

    future = pool.submit(call, (backend._prunus_batch_loader, messages, "batch", contexts))
    try:
        return pool.fetch_result_and_return_actor_to_pool(future)
    except Exception as ex:
        try:
            if isinstance(ex, _lost()):
                _replace_if_dead(pool, future)
        finally:
            pool.add_actor_back_to_pool(future)
        raise


def _replace_if_dead(pool: Any, future: Any) -> None:
    """Put a new actor in the place of the one that ran `future` if that one
    is dead for good (its restarts spent): back in the pool, it would fail
    every later call at once. One new actor per dead one, whichever of the
    threads sharing it (the actor pipeline) finds it dead first."""
    actors = getattr(pool, "_future_to_actor", None)
    actor = actors.get(future) if isinstance(actors, dict) else None
    if actor is None or not hasattr(pool, "create_actor_fn") or _alive(actor):
        return
    with _replacing:
        replaced = pool.__dict__.setdefault("_prunus_replaced", {})
        if actor._actor_id not in replaced:
            replaced[actor._actor_id] = pool.create_actor_fn()
            _count("actors replaced")
            log.info("client actor %s is dead for good; a new one takes its place", actor._actor_id.hex())
    actors[future] = replaced[actor._actor_id]


def _alive(actor: Any) -> bool:
    """False if the actor is dead for good; True once it answers (restarted,
    if it was), or if it has not answered within `READY_WAIT_S`."""
    import ray

    try:
        ray.get(actor.__ray_ready__.remote(), timeout=READY_WAIT_S)
    except ray.exceptions.ActorDiedError:
        return False
    except ray.exceptions.RayError:  # unavailable for now, or slow to restart: not known to be dead
        return True
    return True


def _batch_worker(messageins_queue: Queue, messageres_queue: Queue, node_info_store: dict[int, Any],
                  backend: Any, f_stop: threading.Event, metrics: Any) -> None:
    """Flower's engine worker (`vce_api.worker`), taking up to `_batch_size` messages per actor call."""
    while not f_stop.is_set():
        try:
            messages = [messageins_queue.get(timeout=1.0)]
        except Empty:
            continue
        # at most an even share of what is queued, so that every actor gets
        # work in a round of fewer than `_batch_size` messages per actor
        limit = min(_batch_size, math.ceil((1 + messageins_queue.qsize()) / max(1, backend.num_workers)))
        while len(messages) < limit:
            try:
                messages.append(messageins_queue.get_nowait())
            except Empty:
                break
        started = time.perf_counter()
        try:
            stores = [node_info_store[m.metadata.dst_node_id] for m in messages]
            contexts = [store.retrieve_context(run_id=m.metadata.run_id) for store, m in zip(stores, messages)]
            replies, updated = _run_batch(backend, messages, contexts)
            if len(replies) != len(messages) or len(updated) != len(messages):
                raise ValueError(f"{len(replies)} replies and {len(updated)} contexts for {len(messages)} messages")
            for store, message, context in zip(stores, messages, updated):
                if context is not None:  # None: its ClientApp raised
                    store.update_context(message.metadata.run_id, context=context)
        except Exception as ex:  # noqa: BLE001 - as Flower's worker: every message of the call gets an error reply
            # (in run.log: the server tells the console once per kind of failure, `server.reply_errors`)
            log.info("a batch of %d messages failed: %s", len(messages), ex)
            replies = [_error_reply(m, ex) for m in messages]
        metrics.add_clientapp_runtime(time.perf_counter() - started)
        for reply in replies:
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            messageres_queue.put(reply)


BATCH_NEEDS = (
    Needs(f"{_VCE}:worker", ("messageins_queue", "messageres_queue", "node_info_store", "backend", "f_stop", "metrics")),
    Needs(f"{_BACKEND}.num_workers"), Needs(_BACKEND, sets=("pool", "app_fn")),
    Needs(_POOL, sets=("_future_to_actor", "create_actor_fn")),
    Needs(f"{_POOL}.submit", ("self", "actor_fn", "job")), Needs(f"{_POOL}.fetch_result_and_return_actor_to_pool"),
    Needs(f"{_POOL}.add_actor_back_to_pool"), Needs("ray.actor:ActorMethod.options"),
    Needs("ray.exceptions:ActorDiedError"), Needs("ray.exceptions:NodeDiedError"),
    Needs("flwr.clientapp.client_app:ClientAppException"),
    Needs("flwr.common.constant:ErrorCode.CLIENT_APP_RAISED_EXCEPTION"), Needs("flwr.common.constant:ErrorCode.UNKNOWN"),
)


def enable_client_batches(size: int = 16) -> bool:
    """Send up to `size` queued messages to a client actor in one call (1: Flower's own worker)."""
    global _batch_size
    _batch_size = size
    batch_stats.clear()
    return _install("client-batches", BATCH_NEEDS, _vce_api, "worker", (lambda _: _batch_worker) if size > 1 else None)


# ----------------------------------------------------------- engine partitions
# Node ids are random per run, so a ServerApp learns which partition each
# node holds by asking every node (`server.app.discover_partitions`): one
# message per SuperNode, each a Ray call. The simulation engine assigns
# partitions itself (`vce_api._register_nodes`: the i-th node created holds
# partition i); under `prunus simulate` the ServerApp runs in the engine's
# process, so it can read that map instead.
_engine_nodes: dict[int, int] = {}  # node id -> partition id, as the engine registered them
# set once the engine's map is recorded: its nodes appear in the LinkState one
# by one before `_register_nodes` returns the map, so a ServerApp that sees
# them all may still be ahead of it
_engine_recorded = threading.Event()
_recording_on = False
ENGINE_MAP_WAIT_S = 30.0


def _recording(original: Callable[[int, Any], dict[int, int]]) -> Callable[[int, Any], dict[int, int]]:
    def register_nodes(num_nodes: int, state_factory: Any) -> dict[int, int]:
        mapping = original(num_nodes, state_factory)
        _engine_nodes.clear()
        _engine_nodes.update(mapping)
        _engine_recorded.set()
        return mapping

    return register_nodes


def record_engine_partitions(on: bool = True) -> bool:
    """Keep the map of the nodes the engine registers (off: Flower's own function)."""
    global _recording_on
    _engine_nodes.clear()
    _engine_recorded.clear()
    _recording_on = _install("engine-partitions", (Needs(f"{_VCE}:_register_nodes", ("num_nodes", "state_factory")),),
                             _vce_api, "_register_nodes", _recording if on else None)
    return _recording_on


def engine_partitions(node_ids: set[int]) -> dict[int, int] | None:
    """Partition -> node as the engine registered them, if they are exactly the
    federation's `node_ids` (else None: not this process's engine, ask the nodes).
    While the map is recorded, waits for the engine to finish registering."""
    if _recording_on:
        _engine_recorded.wait(ENGINE_MAP_WAIT_S)
    if set(_engine_nodes) != node_ids:
        return None
    return {partition: node for node, partition in _engine_nodes.items()}


# ---------------------------------------------------------------- reply wait
# InMemoryGrid.send_and_receive sleeps 0.1 s between looks for replies, and
# each look checks every message still in flight (`get_message_res`: expiry,
# node availability, delivery), so looking more often to end a round sooner
# costs the driver's CPU in proportion. So the Grid instead waits until the
# engine stores a reply and then pulls only the messages whose replies
# arrived: O(replies) a round, woken at once. Every `FULL_LOOK_S` it still
# looks at every message in flight, as Flower does, so one that expires or
# whose node goes away still turns into an error reply.
FULL_LOOK_S = 0.5


_GRID = "flwr.superlink.grid.inmemory_grid:InMemoryGrid"
REPLY_WAIT_NEEDS = (Needs(_GRID, sets=("state",)), Needs(f"{_GRID}.send_and_receive", ("self", "messages")),
                    Needs(f"{_GRID}.push_messages", ("self", "messages")),
                    Needs(f"{_GRID}.pull_messages", ("self", "message_ids")),
                    Needs(f"{_LINKSTATE}.store_message_res", ("self", "message")))


def wait_for_replies(grid: Any) -> bool:
    """Make the Simulation Engine's Grid wake on each reply the engine stores
    (a no-op for a Deployment Engine's Grid: replies arrive at the SuperLink).
    Returns whether it engaged."""
    try:
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError:
        InMemoryGrid = ()  # noqa: N806 - no such Grid in this Flower: nothing to wait on
    if not isinstance(grid, InMemoryGrid) or not ready("reply-wait", REPLY_WAIT_NEEDS):
        return False
    arrived, woken = _reply_signal(grid.state)

    def send_and_receive(messages: Any, *, timeout: float | None = None) -> list[Any]:
        pending = set(grid.push_messages(messages))
        sent = set(pending)
        deadline = None if timeout is None else time.monotonic() + timeout
        next_full = time.monotonic() + FULL_LOOK_S
        replies: list[Any] = []
        try:
            while pending:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                with woken:
                    if not arrived & pending:
                        woken.wait((next_full if deadline is None else min(next_full, deadline)) - now)
                    ready = arrived & pending
                    arrived.difference_update(ready)
                if time.monotonic() >= next_full:
                    ready, next_full = pending, time.monotonic() + FULL_LOOK_S
                if ready:
                    found = grid.pull_messages(ready)
                    replies.extend(found)
                    pending.difference_update(m.metadata.reply_to_message_id for m in found)
        finally:
            with woken:
                arrived.difference_update(sent)
        return replies

    grid.send_and_receive = send_and_receive
    return True


def _reply_signal(state: Any) -> tuple[set[str], threading.Condition]:
    """The ids of the messages whose replies `state` stored and nobody took
    yet, and the condition notified with each; installed once per LinkState."""
    if not hasattr(state, "_prunus_replies"):
        arrived, woken, store = set(), threading.Condition(), state.store_message_res

        def store_message_res(message: Any) -> Any:
            stored = store(message)
            if stored is not None:
                with woken:
                    arrived.add(message.metadata.reply_to_message_id)
                    woken.notify_all()
            return stored

        state.store_message_res = store_message_res
        state._prunus_replies = arrived, woken
    return state._prunus_replies


# ---------------------------------------------------------------- actor share
# Flower sizes a simulation's actor pool to every CPU (and GPU) of the cluster
# it attaches to. Two simulations on one cluster therefore each ask for all of
# it; Ray starts some actors of each and leaves the rest pending, and a round
# whose messages went to a pending actor waits for the other simulation to
# end. With a share of N, a run creates 1/N of the actors that fit (at least
# one), so N runs fit side by side.
def enable_actor_share(share: int) -> bool:
    """Size the actor pools this process creates to 1/`share` of the cluster."""

    def shared(original: Callable[[dict[str, int | float]], int]) -> Callable[[dict[str, int | float]], int]:
        return lambda client_resources: max(1, original(client_resources) // share)

    needs = (Needs("flwr.simulation.ray_transport.ray_actor:pool_size_from_resources", ("client_resources",)),)
    return _install("actor-share", needs, _ray_actor, "pool_size_from_resources", shared if share > 1 else None)


# ------------------------------------------------------------ actor shutdown
# Flower stops its client actors by calling their `terminate` method, which
# exits the worker on purpose. With `max_task_retries` set (so that a message
# is retried after a worker crash), Ray treats that exit as a failed task to
# retry and says so on the console for every actor of a clean run. The
# actors are idle by then, so killing them without restart ends them with
# nothing to retry.
def _terminate_all_actors(self: Any) -> None:
    import ray

    for actor in {actor._actor_id: actor for actor in self.pool}.values():  # once each (see the pipeline)
        ray.kill(actor, no_restart=True)


def enable_clean_actor_shutdown(on: bool = True) -> bool:
    """Stop the pool's actors with `ray.kill(no_restart=True)` (off: Flower's own way)."""
    needs = (Needs(_POOL, sets=("pool",)), Needs(f"{_POOL}.terminate_all_actors", ("self",)), Needs("ray:kill"))
    return _install("clean-actor-shutdown", needs, lambda: _ray_actor().BasicActorPool, "terminate_all_actors",
                    (lambda _: _terminate_all_actors) if on else None)


# ------------------------------------------------------ Ray's driver messages
# Ray's driver prints what arrives on its error channel straight to stdout,
# whatever `log_to_driver` says (the notice above, a worker's death).
def route_ray_driver_messages(logger: logging.Logger | None) -> bool:
    """Send those messages to `logger` (None: Ray prints them again)."""

    def to_log(_: Any) -> Callable[[dict[str, Any], bool], None]:
        def print_to_log(data: dict[str, Any], ignore_prefix: bool) -> None:
            for line in data.get("lines", []):
                logger.warning("(%s) %s", data.get("pid", ""), line)

        return print_to_log

    def worker() -> Any:
        from ray._private import worker

        return worker

    needs = (Needs("ray._private.worker:print_to_stdstream", ("data", "ignore_prefix")),)
    return _install("ray-driver-messages", needs, worker, "print_to_stdstream", to_log if logger else None)


# ------------------------------------------------------------------ fast array
_fast_array = True


def enable_fast_array(on: bool = True) -> bool:
    """Build Arrays with `array`'s shortcut (off: Flower's constructor).
    Returns whether the shortcut is in use."""
    global _fast_array
    _fast_array = on
    return on and _array_shortcut_ok()


def array(dtype: str, shape: tuple[int, ...], stype: str, data: bytes) -> Any:
    """`Array(dtype=..., shape=..., stype=..., data=...)`, built as the
    constructor leaves it (its four fields, marked dirty) when that is
    checked to be what this Flower's constructor builds, for a caller whose
    fields are right by construction. The constructor sorts out which of its
    three forms it was given and sets each field through a tracking
    `__setattr__`, and a client builds about ten Arrays a message."""
    from flwr.app import Array

    if not (_fast_array and _array_shortcut_ok()):
        return Array(dtype=dtype, shape=tuple(shape), stype=stype, data=data)
    made = Array.__new__(Array)
    made.__dict__.update(_is_dirty=True, dtype=dtype, shape=shape, stype=stype, data=data)
    return made


@functools.cache
def _array_shortcut_ok() -> bool:
    from flwr.app import Array

    fields = {"dtype": "<f4", "shape": (2,), "stype": "numpy.ndarray", "data": b"\0" * 8}
    made = Array.__new__(Array)
    made.__dict__.update(_is_dirty=True, **fields)
    try:
        same = made.__dict__ == Array(**fields).__dict__
    except Exception:  # noqa: BLE001 - a constructor that takes other arguments: no shortcut
        same = False
    if not same and "fast-array" not in _warned:
        _warned.add("fast-array")
        log.warning("Flower accelerator fast-array is off, stock Flower in place (flwr %s): its Array "
                    "constructor no longer builds what the shortcut builds", _flower_version())
    return same
