"""The Flower ClientApp (Message API).

Each SuperNode is one partition (one user, or a silo of users). Its private
parameters (user embeddings) live in `context.state` between rounds and are
never put in a reply; the reply carries the shared-parameter update and its
metrics.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.compression import encode_update, residual_from_record, residual_to_record
from client.local_update import LocalData, build_local_model, local_data, local_update
from common.broadcast import decode_broadcast
from common.config import Config, from_run_config
from common.datasets import load_split, partitions
from common.evaluation import ranking_metrics
from common.params import from_record, to_record
from common.training import client_settings, fold_in, seeded_generator

PRIVATE_KEY = "private"
RESIDUAL_KEY = "residual"


def make_client_app(config: Config | None = None) -> ClientApp:
    """A ClientApp bound to `config`, or reading Flower's run config if None."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """Tell the server which partition this node holds (for seeded sampling)."""
        return Message(RecordDict({"info": ConfigRecord(_node_info(context))}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = config or from_run_config(context.run_config)
        partition_id, device = _setup(cfg, context)
        data = _local_data(cfg, partition_id, device)
        split = load_split(cfg)
        private = from_record(context.state[PRIVATE_KEY]) if PRIVATE_KEY in context.state else None
        server_round = int(msg.content["config"]["server-round"])
        global_params = decode_broadcast(msg.content["arrays"], cfg)
        result = local_update(cfg, data, split.n_items, global_params, private, server_round, partition_id, device)
        residual = residual_from_record(context.state[RESIDUAL_KEY]) if RESIDUAL_KEY in context.state else None
        encoded = encode_update(cfg, result.delta, residual, server_round, partition_id)
        context.state[PRIVATE_KEY] = to_record(result.private)
        if encoded.residual:
            context.state[RESIDUAL_KEY] = residual_to_record(encoded.residual)
        metrics = MetricRecord(
            {"num-examples": result.num_examples, "train-loss": result.loss, "nnz": encoded.nnz, "density": encoded.density}
        )
        content = RecordDict({"arrays": encoded.record, "metrics": metrics, "info": ConfigRecord(_node_info(context))})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Federated evaluation: rank each local user's held-out item."""
        cfg = config or from_run_config(context.run_config)
        partition_id, device = _setup(cfg, context)
        data = _local_data(cfg, partition_id, device)
        split = load_split(cfg)
        model = build_local_model(cfg, len(data.users), split.n_items, partition_id).to(device)
        shared = decode_broadcast(msg.content["arrays"], cfg)
        model.load_shared({k: torch.as_tensor(v) for k, v in shared.items()})
        if PRIVATE_KEY in context.state:
            model.load_private({k: torch.as_tensor(v) for k, v in from_record(context.state[PRIVATE_KEY]).items()})
        generator = seeded_generator(cfg.seed, int(msg.content["config"]["server-round"]), partition_id, 1)
        fold_in(model, data.local_users, data.items, client_settings(cfg), cfg.user_refit_epochs, cfg.user_lr, generator)
        metrics = ranking_metrics(model, split, k=cfg.top_k, users=data.users)
        n_eval = int(metrics.pop("eval-users"))
        content = {"metrics": MetricRecord({**metrics, "num-examples": n_eval}), "info": ConfigRecord(_node_info(context))}
        return Message(RecordDict(content), reply_to=msg)

    return app


def _setup(cfg: Config, context: Context) -> tuple[int, torch.device]:
    """Pin torch to the CPUs Ray gave the actor and pick CUDA when given a GPU."""
    torch.set_num_threads(max(1, int(cfg.client_num_cpus)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return int(context.node_config["partition-id"]), device


def _local_data(cfg: Config, partition_id: int, device: torch.device) -> LocalData:
    split = load_split(cfg)
    users = partitions(cfg)[partition_id]
    return local_data(split.indptr, split.train_items, np.asarray(users), device)


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
