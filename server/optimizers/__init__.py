"""Server optimisers applied to the aggregated update (Reddi et al. 2021), as plug-ins.

The aggregated client update acts as a pseudo-gradient step: FedAvg adds it
(scaled by the server learning rate), FedAvgM adds a momentum of it, FedAdam
adapts the step per coordinate. One module per optimiser, each registered in
`SERVER_OPTIMIZERS` under its `server-optimizer` name; every module here is
imported below, so a new one needs no other edit (config validation checks
its name against this registry: tests/server/test_optimizers.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Protocol

from prunus.common.params import Params
from prunus.common.registry import Registry

if TYPE_CHECKING:
    from prunus.common.config import FederationConfig

# (first moments, second moments) per tensor: what a checkpoint keeps
OptimizerState = tuple[Params, Params]


class ServerOptimizer(Protocol):
    """Keeps its state between rounds; `step` returns new parameters and never
    mutates arrays (so a refused step is undone by `restore(state())`)."""

    def __init__(self, settings: FederationConfig) -> None: ...

    def step(self, params: Params, update: Params) -> Params: ...

    def state(self) -> OptimizerState: ...

    def restore(self, state: OptimizerState) -> None: ...


SERVER_OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server-optimizer")


def server_optimizer(settings: FederationConfig) -> ServerOptimizer:
    """The configured optimiser, fresh."""
    return SERVER_OPTIMIZERS.get(settings.server_optimizer)(settings)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
