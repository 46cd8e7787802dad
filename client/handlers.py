"""What a client does with a message, free of Flower's runtime.

`train` and `evaluate` take the message content and the client's state (both
Flower records, the wire format) and return the reply content. The ClientApp
(`client.app`) calls them from Flower; the in-process engine
(`simulations.inprocess`) calls them directly, so both run the same client.
The state holds the private user vectors and the uplink method's state (the
error-feedback residual); neither is ever put in a reply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict

from prunus.client import faults
from prunus.client.local_update import LocalData, local_data, local_model, local_update
from prunus.common.compression import DOWNLINK, UPLINK, RoundContext
from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.evaluation import ranking_metrics
from prunus.common.models import model_spec
from prunus.common.params import Params, from_record, to_record
from prunus.common.training import client_settings, fold_in, seeded_generator

PRIVATE_KEY = "private"
RESIDUAL_KEY = "residual"


@dataclass(frozen=True)
class ClientData:
    """One partition's data, where it trains."""

    partition_id: int
    split: SplitData
    data: LocalData
    device: torch.device

    @classmethod
    def of(cls, partition_id: int, split: SplitData, users: np.ndarray, device: torch.device) -> ClientData:
        return cls(partition_id, split, local_data(split, users), device)


def _global_params(cfg: Config, content: RecordDict, client: ClientData) -> Params:
    downlink = DOWNLINK.get(cfg.compression.downlink_codec)(cfg.compression)
    return downlink.decode(content["arrays"], model_spec(cfg.model, client.split.n_items)[0])


def _private(state: RecordDict) -> Params | None:
    return from_record(state[PRIVATE_KEY]) if PRIVATE_KEY in state else None


def train(cfg: Config, content: RecordDict, state: RecordDict, client: ClientData) -> RecordDict:
    """Local training from the broadcast, then the uplink method's payload."""
    server_round = int(content["config"]["server-round"])
    result = local_update(cfg, client.data, client.split.n_items, _global_params(cfg, content, client),
                          _private(state), server_round, client.partition_id, client.device)
    uplink = UPLINK.get(cfg.compression.prune_method)(cfg.compression)
    ctx = RoundContext(server_round, client.partition_id, cfg.runtime.seed, cfg.local_lr_at(server_round))
    faulty = faults.is_faulty(cfg.runtime, server_round, client.partition_id)
    delta = result.delta
    if faulty and cfg.runtime.fault_kind != "garbage":
        delta = faults.corrupt_update(cfg.runtime, delta, server_round, client.partition_id)
    encoded = uplink.encode(delta, from_record(state[RESIDUAL_KEY]) if RESIDUAL_KEY in state else None, ctx)
    state[PRIVATE_KEY] = to_record(result.private)
    if encoded.state:
        state[RESIDUAL_KEY] = to_record(encoded.state)
    metrics = MetricRecord({"num-examples": result.num_examples, "train-loss": result.loss,
                            "nnz": encoded.nnz, "density": encoded.density})
    record = encoded.record
    if faulty and cfg.runtime.fault_kind == "garbage":
        record = faults.garbage(record, server_round, client.partition_id, cfg.runtime.seed)
    return RecordDict({"arrays": record, "metrics": metrics})


def evaluate(cfg: Config, content: RecordDict, state: RecordDict, client: ClientData) -> RecordDict:
    """Federated evaluation: rank each local user's held-out item."""
    server_round = int(content["config"]["server-round"])
    data = client.data
    model = local_model(cfg, len(data.users), client.split.n_items, client.partition_id, client.device,
                        _global_params(cfg, content, client), _private(state))
    generator = seeded_generator(cfg.runtime.seed, server_round, client.partition_id, 1)
    t = cfg.training
    fold_in(model, *data.tensors(client.device), client_settings(cfg), t.user_refit_epochs, t.user_lr, generator)
    metrics = ranking_metrics(model, client.split, k=cfg.evaluation.top_k, users=data.users)
    n_eval = int(metrics.pop("eval-users"))
    return RecordDict({"metrics": MetricRecord({**metrics, "num-examples": n_eval})})
