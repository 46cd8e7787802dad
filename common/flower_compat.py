"""Every Flower (and Ray) internal prunus relies on, in one place, for one version.

prunus uses Flower's public Message API everywhere else. Four things it needs
are not public, so they live here and nowhere else:

* the wire size of a message: Flower ships each distinct object of a record
  (records, arrays, chunks) deflated; `nested_objects` walks them
  (`flwr.supercore.inflatable`);
* a faster dispatcher for the in-process Simulation Engine (`enable_fast_dispatch`);
* sizing the Ray actor pool to a share of the cluster (`enable_actor_share`);
* sending the messages Ray's driver prints on its own to a log instead
  (`route_ray_driver_messages`).

Importing this module checks the installed Flower and Ray versions and fails
at once on others: these internals move between releases, and a silent
mismatch would mean wrong byte counts or a hung simulation.
"""

from __future__ import annotations

import threading
import logging
from importlib.metadata import PackageNotFoundError, version
from queue import Queue
from typing import Any

SUPPORTED_FLOWER = "1.41.0"
SUPPORTED_RAY = "2.55.1"  # what flwr[simulation] 1.41.0 brings

for _package, _supported in (("flwr", SUPPORTED_FLOWER), ("ray", SUPPORTED_RAY)):
    try:
        _installed = version(_package)
    except PackageNotFoundError:  # Ray is optional outside simulations (Deployment Engine)
        continue
    if _installed != _supported:
        raise ImportError(
            f"prunus relies on {_package} {_supported} internals (common/flower_compat.py) "
            f"but {_package} {_installed} is installed; install flwr[simulation]=={SUPPORTED_FLOWER}"
        )

from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects  # noqa: E402


def nested_objects(content: Any) -> dict[str, Any]:
    """Object id -> object for every distinct object Flower ships for `content`."""
    return get_all_nested_objects(content)


# --------------------------------------------------------------- fast dispatch
# Flower 1.41's engine moves messages from its in-memory LinkState to the Ray
# actor queue with a loop that, every 0.1 s, asks *every* node for a message;
# each ask scans every message in flight. With one SuperNode per user (6,040 on
# ML-1M) and 256 messages per round, that is ~1.5 M message checks per sweep,
# holding the GIL: measured here, a round of 256 echo messages took 14-15 s
# with 6,040 nodes. Asking only the nodes that have an undelivered message does
# the same work in 1.5 s (`benchmarks/flower_dispatch.py`). The replacement
# keeps Flower's semantics: the same LinkState call per node
# (`get_message_ins(node_id, limit=1)`, which validates, marks delivered and
# expires messages), the same queue, the same stop event.
POLL_INTERVAL_S = 0.1


def _add_messages_to_queue(state: Any, queue: Queue, nodes_mapping: dict[int, int], f_stop: threading.Event) -> None:
    """Put undelivered messages in the actor queue, polling only their nodes."""
    while not f_stop.is_set():
        with state.lock:  # the in-memory LinkState guards its stores with this lock
            pending = {m.metadata.dst_node_id for m in state.message_ins_store.values() if m.metadata.delivered_at == ""}
        for node_id in sorted(pending):
            if node_id in nodes_mapping:
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
        f_stop.wait(POLL_INTERVAL_S)


def enable_fast_dispatch(on: bool = True) -> None:
    """Install (or remove) the fast dispatcher in Flower's engine module."""
    from flwr.server.superlink.fleet.vce import vce_api

    if not hasattr(vce_api, "_prunus_original_dispatch"):
        vce_api._prunus_original_dispatch = vce_api.add_messages_to_queue
    vce_api.add_messages_to_queue = _add_messages_to_queue if on else vce_api._prunus_original_dispatch


# ---------------------------------------------------------------- actor share
# Flower 1.41 sizes a simulation's actor pool to every CPU (and GPU) of the
# cluster it attaches to. Two simulations on one cluster therefore each ask for
# all of it; Ray starts some actors of each and leaves the rest pending, and a
# round whose messages went to a pending actor waits for the other simulation
# to end (seen here: a sweep with `--jobs 3` on one 2-CPU cluster whose points
# all ran into their timeout). With a share of N, a run creates 1/N of the
# actors that fit (at least one), so N runs fit side by side.
def enable_actor_share(share: int) -> None:
    """Size the actor pools this process creates to 1/`share` of the cluster."""
    from flwr.simulation.ray_transport import ray_actor

    if not hasattr(ray_actor, "_prunus_original_pool_size"):
        ray_actor._prunus_original_pool_size = ray_actor.pool_size_from_resources
    original = ray_actor._prunus_original_pool_size

    def pool_size(client_resources: dict[str, int | float]) -> int:
        return max(1, original(client_resources) // share)

    ray_actor.pool_size_from_resources = pool_size if share > 1 else original


# ------------------------------------------------------------ actor shutdown
# Flower stops its client actors by calling their `terminate` method, which
# exits the worker on purpose. With `max_task_retries` set (so that a message
# is retried after a worker crash), Ray treats that exit as a failed task to
# retry: at the end of every clean simulation it announced "Task
# ClientAppActor.terminate failed ... will be retried" twice per actor, and at
# times the core worker logged "Failed to push error to driver" on stderr.
# The actors are idle by then, so killing them without restart ends them with
# nothing to retry.
def enable_clean_actor_shutdown(on: bool = True) -> None:
    """Stop the pool's actors with `ray.kill(no_restart=True)` (off: Flower's own way)."""
    from flwr.simulation.ray_transport import ray_actor

    pool = ray_actor.BasicActorPool
    if not hasattr(pool, "_prunus_original_terminate"):
        pool._prunus_original_terminate = pool.terminate_all_actors

    def terminate_all_actors(self: Any) -> None:
        import ray

        for actor in self.pool:
            ray.kill(actor, no_restart=True)

    pool.terminate_all_actors = terminate_all_actors if on else pool._prunus_original_terminate


# ------------------------------------------------------ Ray's driver messages
# Ray's driver prints what arrives on its error channel straight to stdout,
# whatever `log_to_driver` says (the notice above, a worker's death).
def route_ray_driver_messages(logger: logging.Logger | None) -> None:
    """Send those messages to `logger` (None: Ray prints them again)."""
    from ray._private import worker

    if not hasattr(worker, "_prunus_original_print"):
        worker._prunus_original_print = worker.print_to_stdstream
    if logger is None:
        worker.print_to_stdstream = worker._prunus_original_print
        return

    def to_log(data: dict[str, Any], ignore_prefix: bool) -> None:
        for line in data.get("lines", []):
            logger.warning("(%s) %s", data.get("pid", ""), line)

    worker.print_to_stdstream = to_log
