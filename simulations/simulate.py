"""Run a federation on Flower's Simulation Engine (Ray backend), or in one process.

Flower is imported only for its engine: `engine = "inprocess"` runs with
neither Flower nor Ray installed."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from prunus.client import state_store
from prunus.common import flower_compat
from prunus.common.config import Config
from prunus.common.datasets import load_split, num_partitions
from prunus.common.logs import LIBRARY_LOG, route_library_logs
from prunus.common.results import clear_run_files
from prunus.server.checkpoint import Checkpoint
from prunus.server.ledger import Ledger
from prunus.server.run import run_federation
from prunus.simulations.inprocess import InProcessTransport


def backend_config(cfg: Config, verbose: bool = False) -> dict:
    """Ray resources and restarts per client actor, and the cluster to attach to if any.

    Without one, Ray is told to start a fresh local instance ("local"): plain
    `ray.init()` would silently join whatever cluster `ray start` last left
    recorded in /tmp/ray, and a simulation must not land on a stranger's
    cluster (or hang on a dead one).
    """
    address = cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS", "") or "local"
    # the actors' own output (Flower's per-actor log lines, Ray's notices about
    # retried shutdown tasks) reaches the console only when asked for
    init_args = {"address": address, "log_to_driver": verbose}
    return {
        # Flower passes these to Ray's actor options: resources, and restarts
        # of a dead actor with retries of the message it was running
        "client_resources": {"num_cpus": cfg.runtime.client_num_cpus, "num_gpus": cfg.runtime.client_num_gpus,
                             "max_restarts": cfg.runtime.client_actor_restarts,
                             "max_task_retries": cfg.runtime.client_actor_restarts},
        "init_args": init_args,
    }


def run_simulate(cfg: Config, verbose: bool = False, resume: Checkpoint | None = None) -> dict:
    """One SuperNode per partition; the ServerApp writes the outputs to `out`.

    With `engine = "inprocess"` the same rounds run in this process instead
    (`simulations.inprocess`): no Flower runtime, no Ray, no partition discovery.
    With `resume` (a checkpoint of the run in `out`) the run goes on from it.
    """
    supernodes = num_partitions(cfg)  # loads (and checks) the data before Ray starts
    if cfg.runtime.engine != "inprocess":  # (which keeps its clients' state in memory)
        cfg = state_store.resolve(cfg, supernodes, load_split(cfg).n_items)
    if resume is None:
        clear_run_files(Path(cfg.runtime.out))
    else:  # the rounds after the checkpoint run again, from the client state they started from
        state_store.rewind(cfg, resume.server_round)
    if cfg.runtime.engine != "inprocess":  # Flower's own console handler exists from its import on: routed next
        from flwr.simulation import run_simulation

        from prunus.client.app import make_client_app
        from prunus.server.app import make_server_app
    route_library_logs(Path(cfg.runtime.out), verbose)
    if cfg.runtime.engine == "inprocess":
        return run_federation(cfg, InProcessTransport(cfg), list(range(supernodes)), Ledger(), resume)
    summary_path = Path(cfg.runtime.out) / "summary.json"
    flower_compat.enable_fast_dispatch(cfg.runtime.fast_dispatch)
    flower_compat.enable_fast_submit(cfg.runtime.fast_submit)
    flower_compat.record_engine_partitions(cfg.runtime.fast_discovery)
    one_at_a_time = cfg.runtime.messages_wait_for_hung_clients  # nothing queued behind a hung client
    flower_compat.enable_actor_pipeline(1 if one_at_a_time else cfg.runtime.actor_pipeline)
    flower_compat.enable_client_batches(1 if one_at_a_time else cfg.runtime.client_batch)
    flower_compat.enable_actor_share(cfg.runtime.ray_share)
    flower_compat.enable_clean_actor_shutdown()
    flower_compat.route_ray_driver_messages(None if verbose else logging.getLogger(LIBRARY_LOG))
    run_simulation(
        server_app=make_server_app(cfg, resume),
        client_app=make_client_app(cfg),
        num_supernodes=supernodes,
        backend_config=backend_config(cfg, verbose),
    )
    if flower_compat.batch_stats:  # batches lost with a dead actor and sent again one message at a time
        logging.getLogger("prunus").info("client batches: %s", ", ".join(
            f"{n} {what}" for what, n in sorted(flower_compat.batch_stats.items())))
    if not cfg.runtime.checkpoint_every:  # the clients' working state; a checkpointed run keeps it to resume
        shutil.rmtree(state_store.store_of(cfg), ignore_errors=True)
    if not summary_path.exists():
        raise RuntimeError(f"the simulation ended without writing {summary_path}; see the log above")
    return json.loads(summary_path.read_text())
