"""`mf`: matrix factorisation, the federated recommender's workhorse (FedMF)."""

from __future__ import annotations

import torch
from torch import nn

from prunus.common.models.base import MODELS, Recommender, Role, Table


@MODELS.register("mf")
class MatrixFactorization(Recommender):
    """Dot product of user and item vectors plus an item bias."""

    def __init__(self, n_users: int, n_items: int, dim: int, init_std: float = 0.1, sparse: bool = False) -> None:
        super().__init__()
        self.n_items = n_items
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim, sparse=sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = self.user_embedding(users)
        v = self.item_embedding(items)
        return (u * v).sum(-1) + self.item_bias(items).squeeze(-1)

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.user_embedding(users), self.item_embedding(items)

    def tables(self) -> dict[str, Table]:
        return {
            "user_embedding.weight": Table(Role.USER, prunable=False),
            "item_embedding.weight": Table(Role.ITEM, prunable=True),
            "item_bias.weight": Table(Role.ITEM, prunable=False),
        }

    @classmethod
    def build(cls, n_users: int, n_items: int, dim: int, mlp_layers: tuple[int, ...], sparse: bool) -> Recommender:
        return cls(n_users, n_items, dim, sparse=sparse)
