"""FedAdam: the step adapted per coordinate by running first and second moments."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prunus.common.params import Params
from prunus.server.optimizers import SERVER_OPTIMIZERS, OptimizerState

if TYPE_CHECKING:
    from prunus.common.config import FederationConfig


@SERVER_OPTIMIZERS.register("fedadam")
class FedAdam:
    def __init__(self, settings: FederationConfig) -> None:
        self.lr, self.beta1 = settings.server_lr, settings.server_momentum
        self.beta2, self.eps = settings.server_beta2, settings.server_eps
        self._m: Params = {}
        self._v: Params = {}

    def step(self, params: Params, update: Params) -> Params:
        out = {}
        for name, param in params.items():
            u = update[name]
            m = self.beta1 * self._m.get(name, np.zeros_like(param)) + (1 - self.beta1) * u
            v = self.beta2 * self._v.get(name, np.zeros_like(param)) + (1 - self.beta2) * u * u
            self._m[name], self._v[name] = m, v
            out[name] = (param + self.lr * m / (np.sqrt(v) + self.eps)).astype(np.float32)
        return out

    def state(self) -> OptimizerState:
        return dict(self._m), dict(self._v)

    def restore(self, state: OptimizerState) -> None:
        self._m, self._v = dict(state[0]), dict(state[1])
