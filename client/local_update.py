"""One client's round: restore private state, re-fit it, train, form the update.

The user vectors are re-fitted to the incoming global item parameters first
(with those fixed), then the shared parameters train with the users fixed:
an alternating scheme that keeps each step well-conditioned for clients with
very few interactions.

Pure function of its inputs (no Flower types), so the ClientApp, the tests and
the tuning harness all run exactly the same client logic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prunus.common.config import Config
from prunus.common.models import Recommender, build_model, is_prunable
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


def local_data(indptr: np.ndarray, train_items: np.ndarray, users: np.ndarray, device: torch.device) -> LocalData:
    """Gather the users' interactions from the CSR training matrix."""
    counts = indptr[users + 1] - indptr[users]
    rows = np.concatenate([np.arange(indptr[u], indptr[u + 1]) for u in users]) if len(users) else np.zeros(0, int)
    local = np.repeat(np.arange(len(users)), counts)
    return LocalData(
        users=users,
        local_users=torch.as_tensor(local, dtype=torch.long, device=device),
        items=torch.as_tensor(train_items[rows], dtype=torch.long, device=device),
    )


def build_local_model(cfg: Config, n_local_users: int, n_items: int, partition_id: int) -> Recommender:
    """A model whose user table holds only this client's users."""
    sparse = cfg.local_optimizer == "sgd"
    seed = cfg.seed * 1_000_003 + partition_id
    return build_model(cfg.model, n_local_users, n_items, cfg.dim, cfg.mlp_widths, seed=seed, sparse=sparse)


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
    model = build_local_model(cfg, len(data.users), n_items, partition_id).to(device)
    model.load_shared({k: torch.as_tensor(v) for k, v in global_shared.items()})
    if private is not None:
        model.load_private({k: torch.as_tensor(v) for k, v in private.items()})
    generator = seeded_generator(cfg.seed, server_round, partition_id)
    settings = client_settings(cfg, server_round)
    if cfg.user_refit_epochs:
        fold_in(model, data.local_users, data.items, settings, cfg.user_refit_epochs, cfg.user_lr, generator)
    loss = train(model, data.local_users, data.items, settings, generator, params=model.shared_parameters())
    local_shared = model.shared_state()
    delta = {k: (local_shared[k].cpu().numpy() - global_shared[k]).astype(np.float32) for k in global_shared}
    if cfg.model_sparsity:
        # the server prunes the model; its zeros are the mask, kept in the update
        for name, value in delta.items():
            if is_prunable(name):
                value[global_shared[name] == 0] = 0.0
    private_out = {k: v.cpu().numpy() for k, v in model.private_state().items()}
    return LocalResult(delta=delta, private=private_out, num_examples=data.num_examples, loss=loss)
