"""The Flower ClientApp (Message API).

Each SuperNode is one partition (one user, or a silo of users). Its private
state (user embeddings, an error-feedback residual) is never put in a reply;
the reply carries the shared-parameter update and its metrics. Under the
Deployment Engine the state lives in `context.state`; in a simulation it
lives in the run's client-state store (`client.state_store`), so that it
does not travel through the driver with every message.

The handlers (`client.handlers`) speak prunus content (`common.payload`);
Flower's records are converted here, at the edge (`common.flower_records`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from prunus.client import dispatch
from prunus.client.handlers import ClientData
from prunus.client.state import StoreHome, Use
from prunus.common.config import Config, from_run_config
from prunus.common.data import SplitData
from prunus.common.datasets import load_split, partitions
from prunus.common.flower_records import from_flower, to_array_record, to_flower
from prunus.common.partition_files import load_partition_file
from prunus.common.payload import ConfigMap, Content, MessageType
from prunus.common.secagg import messages as secagg

SCRATCH = secagg.RECORD


def make_client_app(config: Config | None = None) -> ClientApp:
    """A ClientApp bound to `config`, or reading Flower's run config if None."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tell the server which partition this node holds (for seeded sampling)."""
        return Message(RecordDict({"info": ConfigRecord(_node_info(context))}), reply_to=msg)

    # one function per message type the client answers (client/dispatch.py):
    # train, evaluate, the row query and secure aggregation's exchanges
    for message_type in dispatch.USES:
        category, _, action = message_type.partition(".")
        register = {MessageType.TRAIN: app.train, MessageType.EVALUATE: app.evaluate, MessageType.QUERY: app.query}
        register[category](*([action] if action else []))(_answering(message_type, config))

    return app


def _answering(message_type: str, config: Config | None) -> Callable[[Message, Context], Message]:
    def answer(msg: Message, context: Context) -> Message:
        return _handle(message_type, msg, context, config)

    return answer


class ContextScratch:
    """A round's scratch record in the node's Flower `Context` (small: a few keys)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def get(self, partition: int) -> ConfigMap | None:
        record = self.context.state.get(SCRATCH)
        return from_flower(RecordDict({SCRATCH: record}))[SCRATCH] if isinstance(record, ConfigRecord) else None

    def put(self, partition: int, record: ConfigMap | None) -> None:
        if record is None:
            self.context.state.pop(SCRATCH, None)
        else:
            self.context.state[SCRATCH] = ConfigRecord(dict(record))


class ContextHome:
    """A Deployment Engine node's state: in its Flower `Context`."""

    def __init__(self, context: Context) -> None:
        self.context, self.scratch = context, ContextScratch(context)

    def load(self, partition: int, server_round: int, use: Use) -> Content:
        state = from_flower(self.context.state)
        state.pop(SCRATCH, None)  # the scratch record is `serve`'s to hand over
        return state

    def save(self, partition: int, server_round: int, state: Content, n_items: int) -> None:
        for name, arrays in state.items():
            self.context.state[name] = to_array_record(arrays)


def _handle(message_type: str, msg: Message, context: Context, config: Config | None) -> Message:
    """Answer a message with the Flower-free handlers on this node's data and state; add where it ran."""
    cfg = config or node_run_config(context)
    # use the CPUs Ray gave the actor, and CUDA when it gave a GPU
    torch.set_num_threads(max(1, int(cfg.runtime.client_num_cpus)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    partition_id = int(context.node_config["partition-id"])
    split, users = _partition_data(cfg, context, partition_id)
    simulated = not context.node_config.get("data-file")  # under the Deployment Engine clients keep their state
    home = StoreHome(cfg, ContextScratch(context)) if simulated else ContextHome(context)
    client = ClientData.of(partition_id, split, users, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    content = dispatch.answer(message_type, cfg, from_flower(msg.content), home, client)
    content["info"] = ConfigMap({**_node_info(context), **_cuda_info(device)})
    return Message(to_flower(content), reply_to=msg)


def _cuda_info(device: torch.device) -> dict[str, str | int]:
    """On CUDA, the device a message's work was given and the most memory it
    held there: 0 would mean its tensors stayed on the CPU (a step in numpy,
    say), which the device alone cannot tell. Nothing on the CPU, so that a
    CPU run's replies are byte for byte those of the in-process engine."""
    if device.type != "cuda":
        return {}
    return {"cuda-device": f"cuda:{torch.cuda.current_device()}",
            "cuda-peak-bytes": int(torch.cuda.max_memory_allocated(device))}


def node_run_config(context: Context) -> Config:
    """The run config as this node uses it. With a partition file (Deployment
    Engine) the node reads that file alone, and the run's `data-dir` (the
    server's copy of the data, for central evaluation) need not exist on this
    host: the file's folder stands in for it."""
    run_config = dict(context.run_config)
    data_file = context.node_config.get("data-file")
    if data_file:
        run_config["data-dir"] = os.path.dirname(os.path.abspath(str(data_file)))
    return from_run_config(run_config)


def _partition_data(cfg: Config, context: Context, partition_id: int) -> tuple[SplitData, np.ndarray]:
    """This node's split and user rows in it.

    With `data-file` in the node config (Deployment Engine) the node reads its
    own partition file only; otherwise (simulation) it takes its users from the
    whole data set, which every actor of the machine shares through a cache.
    """
    data_file = context.node_config.get("data-file")
    if data_file:
        split = load_partition_file(str(data_file), cfg, partition_id)
        return split, np.arange(split.n_users)
    return load_split(cfg), np.asarray(partitions(cfg)[partition_id])


def _node_info(context: Context) -> dict[str, str | int]:
    """Where this reply was computed: partition, host and Ray node."""
    info: dict[str, str | int] = {
        "partition-id": int(context.node_config["partition-id"]),
        "host": os.uname().nodename,
    }
    ray_node = _ray_node_id()
    if ray_node:
        info["ray-node"] = ray_node
    return info


def _ray_node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except ImportError:  # Deployment Engine without Ray
        return ""


app = make_client_app()
