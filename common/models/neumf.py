"""`neumf`: neural matrix factorisation (He et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from prunus.common.models.base import MODELS, Recommender, Role, Table


@MODELS.register("neumf")
class NeuMF(Recommender):
    """Neural matrix factorisation (He et al. 2017): GMF and MLP towers fused."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        mlp_layers: tuple[int, ...] = (64, 32, 16),
        init_std: float = 0.1,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        half = mlp_layers[0] // 2
        self.user_gmf = nn.Embedding(n_users, dim)
        self.item_gmf = nn.Embedding(n_items, dim, sparse=sparse)
        self.user_mlp = nn.Embedding(n_users, half)
        self.item_mlp = nn.Embedding(n_items, half, sparse=sparse)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=init_std)
        layers: list[nn.Module] = []
        for width_in, width_out in zip(mlp_layers[:-1], mlp_layers[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(dim + mlp_layers[-1], 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1))
        return self.output(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.user_gmf(users), self.item_gmf(items), self.user_mlp(users), self.item_mlp(items)

    def tables(self) -> dict[str, Table]:
        tables = {
            "user_gmf.weight": Table(Role.USER, prunable=False),
            "item_gmf.weight": Table(Role.ITEM, prunable=True),
            "user_mlp.weight": Table(Role.USER, prunable=False),
            "item_mlp.weight": Table(Role.ITEM, prunable=True),
        }
        for prefix, layer in [*((f"mlp.{i}", m) for i, m in enumerate(self.mlp)), ("output", self.output)]:
            if isinstance(layer, nn.Linear):
                tables[f"{prefix}.weight"] = Table(Role.DENSE, prunable=True)
                tables[f"{prefix}.bias"] = Table(Role.BIAS, prunable=False)
        return tables

    @classmethod
    def build(cls, n_users: int, n_items: int, dim: int, mlp_layers: tuple[int, ...], sparse: bool) -> Recommender:
        return cls(n_users, n_items, dim, mlp_layers, sparse=sparse)
