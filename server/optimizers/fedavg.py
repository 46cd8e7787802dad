"""FedAvg: the aggregated update, scaled by the server learning rate, added."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prunus.common.params import Params
from prunus.server.optimizers import SERVER_OPTIMIZERS, OptimizerState

if TYPE_CHECKING:
    from prunus.common.config import FederationConfig


@SERVER_OPTIMIZERS.register("fedavg")
class FedAvg:
    def __init__(self, settings: FederationConfig) -> None:
        self.lr = settings.server_lr

    def step(self, params: Params, update: Params) -> Params:
        return {name: (params[name] + self.lr * update[name]).astype(np.float32) for name in params}

    def state(self) -> OptimizerState:
        return {}, {}

    def restore(self, state: OptimizerState) -> None:
        pass  # stateless
