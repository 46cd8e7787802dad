"""One client's round: restore private state, re-fit it, train, form the update.

The user vectors are re-fitted to the incoming global item parameters first
(with those fixed), then the shared parameters train with the users fixed:
an alternating scheme that keeps each step well-conditioned for clients with
very few interactions.

Pure function of its inputs (no Flower types), so the ClientApp, the
in-process engine and the tests all run exactly the same client logic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.mf_closed_form import closed_form, local_update_mf
from prunus.common.models import Recommender, build_model, model_spec
from prunus.common.params import Params
from prunus.common.training import TrainSettings, client_settings, fold_in, seeded_generator, train


@dataclass(frozen=True)
class LocalData:
    """A client's training interactions, with users re-indexed locally."""

    users: np.ndarray  # global user ids of this client, sorted
    local_users: np.ndarray  # per interaction: index into `users`
    items: np.ndarray  # per interaction: item id

    @property
    def num_examples(self) -> int:
        return len(self.items)

    def only(self, items: np.ndarray) -> LocalData:
        """The interactions with these items (the rows a message carried)."""
        keep = np.isin(self.items, items)
        return LocalData(self.users, self.local_users[keep], self.items[keep])

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`(local_users, items)` as tensors, for the PyTorch training path."""
        return (torch.as_tensor(self.local_users, dtype=torch.long, device=device),
                torch.as_tensor(self.items, dtype=torch.long, device=device))


@dataclass(frozen=True)
class LocalResult:
    delta: Params  # local shared parameters minus the global ones
    private: Params  # the new private state (never sent)
    num_examples: int
    loss: float


def local_data(split: SplitData, users: np.ndarray) -> LocalData:
    """Gather the users' interactions from the split's CSR training matrix."""
    counts = split.indptr[users + 1] - split.indptr[users]
    return LocalData(
        users=users,
        local_users=np.repeat(np.arange(len(users), dtype=np.int64), counts),
        items=split.train_items[split.rows_of(users)].astype(np.int64),
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
    negative_pool: np.ndarray | None = None,
) -> LocalResult:
    """Train on the client's data starting from the global shared parameters,
    drawing negatives from `negative_pool` (None: every item)."""
    settings = dataclasses.replace(client_settings(cfg, server_round), negative_pool=negative_pool)
    t = cfg.training
    if closed_form(cfg):
        delta, private_out, loss = local_update_mf(
            global_shared, private, data.local_users, data.items, len(data.users), settings,
            t.user_refit_epochs, t.user_lr, cfg.runtime.seed, server_round, partition_id,
        )
    else:
        delta, private_out, loss = _torch_update(cfg, data, n_items, global_shared, private, server_round,
                                                 partition_id, device, settings)
    if cfg.compression.model_sparsity:
        # the server prunes the model; its zeros are the mask, kept in the update
        for name in model_spec(cfg.model, n_items).prunable:
            delta[name][global_shared[name] == 0] = 0.0
    return LocalResult(delta=delta, private=private_out, num_examples=data.num_examples, loss=loss)


def _torch_update(cfg: Config, data: LocalData, n_items: int, global_shared: Params, private: Params | None,
                  server_round: int, partition_id: int, device: torch.device,
                  settings: TrainSettings) -> tuple[Params, Params, float]:
    """The PyTorch reference: any model, any optimiser."""
    model = local_model(cfg, len(data.users), n_items, partition_id, device, global_shared, private)
    generator = seeded_generator(cfg.runtime.seed, server_round, partition_id)
    users, items = data.tensors(device)
    if cfg.training.user_refit_epochs:
        fold_in(model, users, items, settings, cfg.training.user_refit_epochs, cfg.training.user_lr, generator)
    loss = train(model, users, items, settings, generator, params=model.shared_parameters())
    local_shared = model.shared_state()
    delta = {k: (local_shared[k].cpu().numpy() - global_shared[k]).astype(np.float32) for k in global_shared}
    private_out = {k: v.cpu().numpy() for k, v in model.private_state().items()}
    return delta, private_out, loss
