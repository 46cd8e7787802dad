"""The Flower ClientApp (Message API).

Each SuperNode is one partition (one user, or a silo of users). Its private
parameters (user embeddings) live in `context.state` between rounds and are
never put in a reply; the reply carries the shared-parameter update and its
metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from prunus.client.compression import encode_update, residual_from_record, residual_to_record
from prunus.client.local_update import LocalData, build_local_model, local_data, local_update
from prunus.common.broadcast import decode_broadcast
from prunus.common.config import Config, from_run_config
from prunus.common.datasets import load_split, partitions
from prunus.common.evaluation import ranking_metrics
from prunus.common.data import SplitData
from prunus.common.params import Params, from_record, to_record
from prunus.common.partition_files import load_partition_file
from prunus.common.training import client_settings, fold_in, seeded_generator

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
        job = _Job.of(msg, context, config)
        result = local_update(
            job.cfg, job.data, job.split.n_items, job.global_params, job.private, job.server_round, job.partition_id, job.device
        )
        residual = residual_from_record(context.state[RESIDUAL_KEY]) if RESIDUAL_KEY in context.state else None
        encoded = encode_update(job.cfg, result.delta, residual, job.server_round, job.partition_id)
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
        job = _Job.of(msg, context, config)
        cfg = job.cfg
        model = build_local_model(cfg, len(job.data.users), job.split.n_items, job.partition_id).to(job.device)
        model.load_shared({k: torch.as_tensor(v) for k, v in job.global_params.items()})
        if job.private is not None:
            model.load_private({k: torch.as_tensor(v) for k, v in job.private.items()})
        generator = seeded_generator(cfg.seed, job.server_round, job.partition_id, 1)
        data = job.data
        fold_in(model, data.local_users, data.items, client_settings(cfg), cfg.user_refit_epochs, cfg.user_lr, generator)
        metrics = ranking_metrics(model, job.split, k=cfg.top_k, users=data.users)
        n_eval = int(metrics.pop("eval-users"))
        content = {"metrics": MetricRecord({**metrics, "num-examples": n_eval}), "info": ConfigRecord(_node_info(context))}
        return Message(RecordDict(content), reply_to=msg)

    return app


@dataclass(frozen=True)
class _Job:
    """What a train or evaluate message needs: config, data, global and private state."""

    cfg: Config
    partition_id: int
    device: torch.device
    split: SplitData
    data: LocalData
    server_round: int
    global_params: Params
    private: Params | None

    @classmethod
    def of(cls, msg: Message, context: Context, config: Config | None) -> _Job:
        cfg = config or from_run_config(context.run_config)
        # use the CPUs Ray gave the actor, and CUDA when it gave a GPU
        torch.set_num_threads(max(1, int(cfg.client_num_cpus)))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        partition_id = int(context.node_config["partition-id"])
        split, users = _partition_data(cfg, context, partition_id)
        return cls(
            cfg=cfg,
            partition_id=partition_id,
            device=device,
            split=split,
            data=local_data(split.indptr, split.train_items, users, device),
            server_round=int(msg.content["config"]["server-round"]),
            global_params=decode_broadcast(msg.content["arrays"], cfg),
            private=from_record(context.state[PRIVATE_KEY]) if PRIVATE_KEY in context.state else None,
        )


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
