"""The same federation in one process: no Flower runtime, no Ray.

`InProcessTransport` hands each message's content straight to the client
(`client.dispatch`, as the ClientApp does), keeping each client's state in
memory (`client.state.MemoryHome`). The server side is
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

from prunus.client import dispatch, faults
from prunus.client.handlers import ClientData
from prunus.client.state import MemoryHome
from prunus.common.config import Config
from prunus.common.datasets import load_split, partitions
from prunus.common.payload import ConfigMap
from prunus.server.transport import Outgoing, Reply

log = logging.getLogger("prunus")

NodeInfo = Callable[[int], dict[str, str | int]]


def local_node_info(partition: int) -> dict[str, str | int]:
    """What a ClientApp reports of itself outside Ray: its partition and host."""
    return {"partition-id": partition, "host": os.uname().nodename}


class InProcessTransport:
    """Runs each client's handler in this process, in message order."""

    def __init__(self, cfg: Config, node_info: NodeInfo = local_node_info) -> None:
        self.cfg, self.node_info = cfg, node_info
        self.split, self.partitions = load_split(cfg), partitions(cfg)
        self.home = MemoryHome(cfg)
        self.device = torch.device("cpu")

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]:
        return [self._call(message_type, message) for message in messages]

    def _call(self, message_type: str, message: Outgoing) -> Reply:
        partition = message.partition
        client = ClientData.of(partition, self.split, np.asarray(self.partitions[partition]), self.device)
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(self.cfg.runtime.client_num_cpus)))  # as a client actor has
        try:  # nothing here can be preempted or die alone: a hung or dead client is one whose reply never comes
            content = dispatch.answer(message_type, self.cfg, message.content, self.home, client, isolated=False)
        except faults.NoReply as err:
            return Reply(partition, partition, None, str(err))
        except Exception as err:  # noqa: BLE001 - a failing client is a failed reply, as under Flower
            log.info("client %d failed", partition, exc_info=True)  # its traceback: in run.log only
            return Reply(partition, partition, None, f"{type(err).__name__}: {err}")
        finally:
            torch.set_num_threads(threads)
        content["info"] = ConfigMap(self.node_info(partition))
        return Reply(partition, partition, content)
