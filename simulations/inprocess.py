"""The same federation in one process: no Flower runtime, no Ray.

`InProcessTransport` hands each message's content straight to the client
handlers (`client.handlers`) that the ClientApp runs, keeping each client's
state between rounds the way Flower keeps `context.state`. The server side is
`server.federation`, as in a Flower run, so the rounds, the model and the
bytes counted are the same (tests/simulations/test_engines.py checks it); what
is lost is parallelism and isolation. Use it to tune (`engine = "inprocess"`
with `eval-split = "validation"`, in `prunus sweep` too) and to debug.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import torch
from prunus.common.payload import ConfigMap, Content, MessageType

from prunus.client import faults, handlers, state_store
from prunus.client.handlers import ClientData
from prunus.common.compression.base import ROW_QUERY
from prunus.common.config import Config
from prunus.common.datasets import load_split, partitions
from prunus.server.federation import Outgoing, Reply

log = logging.getLogger("prunus")

HANDLERS = {MessageType.TRAIN: handlers.train, MessageType.EVALUATE: handlers.evaluate, ROW_QUERY: handlers.request_rows}

NodeInfo = Callable[[int], dict[str, str | int]]


def local_node_info(partition: int) -> dict[str, str | int]:
    """What a ClientApp reports of itself outside Ray: its partition and host."""
    return {"partition-id": partition, "host": os.uname().nodename}


class InProcessTransport:
    """Runs each client's handler in this process, in message order."""

    def __init__(self, cfg: Config, node_info: NodeInfo = local_node_info) -> None:
        self.cfg, self.node_info = cfg, node_info
        self.split, self.partitions = load_split(cfg), partitions(cfg)
        self.states: dict[int, Content] = {}
        self.device = torch.device("cpu")

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]:
        handler = HANDLERS[message_type]
        return [self._call(handler, message) for message in messages]

    def _call(self, handler: Callable, message: Outgoing) -> Reply:
        partition = message.partition
        state = self.states.setdefault(partition, Content())
        client = ClientData.of(partition, self.split, np.asarray(self.partitions[partition]), self.device)
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(self.cfg.runtime.client_num_cpus)))  # as a client actor has
        server_round = int(message.content["config"]["server-round"])
        runtime = self.cfg.runtime
        if handler is handlers.train and runtime.fault_kind == "hang" and faults.is_faulty(runtime, server_round, partition):
            # nothing here can be preempted: a hung client is one whose reply never comes
            return Reply(partition, partition, None, f"no reply within the round timeout ({self.cfg.federation.round_timeout:g} s)")
        checkpoints = bool(runtime.checkpoint_every)  # else the state lives in memory only
        if checkpoints:  # a resumed run's client: its state from before this round
            state_store.restore(self.cfg, state, partition, server_round - 1)
        try:
            content = handler(self.cfg, message.content, state, client)
            if handler is handlers.train and checkpoints:
                state_store.persist(self.cfg, state, partition, server_round, client.split.n_items)
        except Exception as err:  # noqa: BLE001 - a failing client is a failed reply, as under Flower
            log.exception("client %d failed", partition)
            return Reply(partition, partition, None, f"{type(err).__name__}: {err}")
        finally:
            torch.set_num_threads(threads)
        content["info"] = ConfigMap(self.node_info(partition))
        return Reply(partition, partition, content)
