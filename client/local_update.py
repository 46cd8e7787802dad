"""One client's round: restore private state, re-fit it, train, form the update.

The user vectors are re-fitted to the incoming global item parameters first
(with those fixed), then the shared parameters train with the users fixed:
an alternating scheme that keeps each step well-conditioned for clients with
very few interactions.

Pure function of its inputs (no Flower types), so the ClientApp, the
in-process engine and the tests all run exactly the same client logic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.models import Recommender, build_model
from prunus.common.params import Params
from prunus.common.training import client_settings, fold_in, seeded_generator, train


@dataclass(frozen=True)
class LocalData:
    """A client's training interactions, with users re-indexed locally."""

    users: np.ndarray  # global user ids of this client, sorted
    local_users: torch.Tensor  # per interaction: index into `users`
    items: torch.Tensor  # per interaction: item id

    @property
    def num_examples(self) -> int:
        return int(self.items.numel())


@dataclass(frozen=True)
class LocalResult:
    delta: Params  # local shared parameters minus the global ones
    private: Params  # the new private state (never sent)
    num_examples: int
    loss: float


def local_data(split: SplitData, users: np.ndarray, device: torch.device) -> LocalData:
    """Gather the users' interactions from the split's CSR training matrix."""
    counts = split.indptr[users + 1] - split.indptr[users]
    local = np.repeat(np.arange(len(users)), counts)
    return LocalData(
        users=users,
        local_users=torch.as_tensor(local, dtype=torch.long, device=device),
        items=torch.as_tensor(split.train_items[split.rows_of(users)], dtype=torch.long, device=device),
    )


def local_model(cfg: Config, n_local_users: int, n_items: int, partition_id: int, device: torch.device,
                global_shared: Params, private: Params | None) -> Recommender:
    """A model whose user table holds only this client's users, loaded with the
    global shared parameters and the client's private state (if any)."""
    sparse = cfg.training.local_optimizer == "sgd"
    seed = cfg.runtime.seed * 1_000_003 + partition_id
    m = cfg.model
    model = build_model(m.model, n_local_users, n_items, m.dim, m.mlp_widths, seed=seed, sparse=sparse).to(device)
    model.load_shared({k: torch.as_tensor(v) for k, v in global_shared.items()})
    if private is not None:
        model.load_private({k: torch.as_tensor(v) for k, v in private.items()})
    return model


def local_update(
    cfg: Config,
    data: LocalData,
    n_items: int,
    global_shared: Params,
    private: Params | None,
    server_round: int,
    partition_id: int,
    device: torch.device,
) -> LocalResult:
    """Train on the client's data starting from the global shared parameters."""
    model = local_model(cfg, len(data.users), n_items, partition_id, device, global_shared, private)
    generator = seeded_generator(cfg.runtime.seed, server_round, partition_id)
    settings = client_settings(cfg, server_round)
    if cfg.training.user_refit_epochs:
        fold_in(model, data.local_users, data.items, settings, cfg.training.user_refit_epochs, cfg.training.user_lr, generator)
    loss = train(model, data.local_users, data.items, settings, generator, params=model.shared_parameters())
    local_shared = model.shared_state()
    delta = {k: (local_shared[k].cpu().numpy() - global_shared[k]).astype(np.float32) for k in global_shared}
    if cfg.compression.model_sparsity:
        # the server prunes the model; its zeros are the mask, kept in the update
        for name in model.prunable_names():
            delta[name][global_shared[name] == 0] = 0.0
    private_out = {k: v.cpu().numpy() for k, v in model.private_state().items()}
    return LocalResult(delta=delta, private=private_out, num_examples=data.num_examples, loss=loss)
