"""What every recommender shares: declared tables, the model registry, `build_model`.

Shared parameters (item tables, item biases, dense layers) travel between
server and clients; private ones (user tables) never leave a client. Every
model scores `(user, item)` pairs with `forward`, where `user` indexes the
model's own user table: on a client that table holds only its users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from prunus.common.registry import Registry

if TYPE_CHECKING:
    from prunus.common.config import ModelConfig


class Role(str, Enum):
    """What a parameter tensor is, which decides where it lives and travels."""

    USER = "user"  # a private table, one row per user: never leaves the client
    ITEM = "item"  # a shared table (or bias column), one row per item
    DENSE = "dense"  # a shared weight matrix
    BIAS = "bias"  # a shared bias vector of a dense layer


@dataclass(frozen=True)
class Table:
    """The declaration of one parameter tensor."""

    role: Role
    prunable: bool  # whether model pruning may zero its entries

    @property
    def private(self) -> bool:
        return self.role is Role.USER


MODELS: Registry[type[Recommender]] = Registry("model")


class Recommender(nn.Module):
    """Base class: a model declares its tables in `tables()`; the rest follows."""

    n_items: int

    def tables(self) -> dict[str, Table]:
        """Every parameter, by name, with its role and prunability."""
        raise NotImplementedError

    def shared_names(self) -> list[str]:
        """Names of the parameters that travel, in a fixed order."""
        tables = self.tables()
        return [n for n, _ in self.named_parameters() if not tables[n].private]

    def private_names(self) -> list[str]:
        """Names of the parameters that never leave the client."""
        tables = self.tables()
        return [n for n, _ in self.named_parameters() if tables[n].private]

    def prunable_names(self) -> list[str]:
        """Shared tensors that model pruning may sparsify."""
        tables = self.tables()
        return [n for n in self.shared_names() if tables[n].prunable]

    def shared_state(self) -> dict[str, torch.Tensor]:
        """Detached copies of the shared parameters."""
        return self._state(self.shared_names())

    def private_state(self) -> dict[str, torch.Tensor]:
        """Detached copies of the private parameters."""
        return self._state(self.private_names())

    def load_shared(self, state: dict[str, torch.Tensor]) -> None:
        """Overwrite the shared parameters in place (shapes must match)."""
        self._load(self.shared_names(), state)

    def load_private(self, state: dict[str, torch.Tensor]) -> None:
        """Overwrite the private parameters in place (shapes must match)."""
        self._load(self.private_names(), state)

    def embedding_rows(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The embedding rows a batch of pairs reads."""
        raise NotImplementedError

    def regularised_rows(self, users: torch.Tensor, items: torch.Tensor, power: int = 2) -> torch.Tensor:
        """Per pair, the sum of |x|^power over the embedding rows it touches.

        Regularising only touched rows keeps untouched rows' updates exactly
        zero, so updates stay row-sparse (power 2: L2; power 1: L1, which
        pushes entries to zero and so helps pruning).
        """
        # square() and abs() are each one pass; abs().pow(2) took four times as
        # long on the server's full-batch NeuMF fold-in
        term = torch.square if power == 2 else lambda r: r.abs().pow(power)
        return sum(term(r).sum(-1) for r in self.embedding_rows(users, items))

    def private_parameters(self) -> list[nn.Parameter]:
        params = dict(self.named_parameters())
        return [params[n] for n in self.private_names()]

    def shared_parameters(self) -> list[nn.Parameter]:
        params = dict(self.named_parameters())
        return [params[n] for n in self.shared_names()]

    def _state(self, names: list[str]) -> dict[str, torch.Tensor]:
        params = dict(self.named_parameters())
        return {n: params[n].detach().clone() for n in names}

    def _load(self, names: list[str], state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name in names:
                params[name].copy_(state[name])


def build_model(
    name: str,
    n_users: int,
    n_items: int,
    dim: int,
    mlp_layers: tuple[int, ...] = (64, 32, 16),
    seed: int = 0,
    sparse: bool = False,
) -> Recommender:
    """Build a model with seeded initialisation.

    `sparse=True` gives item tables sparse gradients, so a plain SGD step
    touches only the rows a batch used (a client's few items, not the table).
    """
    model_class = MODELS.get(name)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return model_class.build(n_users, n_items, dim, mlp_layers, sparse)
    finally:
        torch.random.set_rng_state(generator_state)


class ModelSpec(NamedTuple):
    """What a broadcast, an update or a saved model of a model must match."""

    shapes: dict[str, tuple[int, ...]]  # the shared tensors' shapes
    prunable: tuple[str, ...]  # the names model pruning may touch
    item_tables: tuple[str, ...]  # the shared tensors with one row per item (a partial broadcast's rows)


@lru_cache(maxsize=8)
def model_spec(model: ModelConfig, n_items: int) -> ModelSpec:
    """The `ModelSpec` of `model` over `n_items` items."""
    built = build_model(model.model, 1, n_items, model.dim, model.mlp_widths)
    tables = built.tables()
    return ModelSpec({name: tuple(value.shape) for name, value in built.shared_state().items()},
                     tuple(built.prunable_names()),
                     tuple(name for name in built.shared_names() if tables[name].role is Role.ITEM))


@lru_cache(maxsize=8)
def private_rows(model: ModelConfig, n_items: int) -> dict[str, tuple[int, ...]]:
    """Each private table's shape less its first axis: a client's table has
    one row of it per local user (what a client's state must hold)."""
    built = build_model(model.model, 1, n_items, model.dim, model.mlp_widths)
    return {name: tuple(value.shape[1:]) for name, value in built.private_state().items()}
