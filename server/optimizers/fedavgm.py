"""FedAvgM: a momentum of the aggregated update added (server-momentum)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prunus.common.params import Params
from prunus.server.optimizers import SERVER_OPTIMIZERS, OptimizerState

if TYPE_CHECKING:
    from prunus.common.config import FederationConfig


@SERVER_OPTIMIZERS.register("fedavgm")
class FedAvgM:
    def __init__(self, settings: FederationConfig) -> None:
        self.lr, self.momentum = settings.server_lr, settings.server_momentum
        self._m: Params = {}

    def step(self, params: Params, update: Params) -> Params:
        out = {}
        for name, param in params.items():
            m = self.momentum * self._m.get(name, np.zeros_like(param)) + update[name]
            self._m[name] = m
            out[name] = (param + self.lr * m).astype(np.float32)
        return out

    def state(self) -> OptimizerState:
        return dict(self._m), {}

    def restore(self, state: OptimizerState) -> None:
        self._m = dict(state[0])
