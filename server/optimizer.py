"""Server optimisers applied to the aggregated update (Reddi et al. 2021).

The aggregated client update acts as a pseudo-gradient step: FedAvg adds it
(scaled by the server learning rate), FedAvgM adds a momentum of it, FedAdam
adapts the step per coordinate.
"""

from __future__ import annotations

import numpy as np

from prunus.common.params import Params


class ServerOptimizer:
    """Keeps the optimiser state between rounds; `step` returns new params."""

    def __init__(self, kind: str, lr: float, momentum: float = 0.9, beta2: float = 0.99, eps: float = 1e-3) -> None:
        if kind not in ("fedavg", "fedavgm", "fedadam"):
            raise ValueError(f"unknown server optimizer {kind!r}")
        self.kind, self.lr, self.momentum, self.beta2, self.eps = kind, lr, momentum, beta2, eps
        self._m: Params = {}
        self._v: Params = {}

    def state(self) -> tuple[Params, Params]:
        """A snapshot to `restore` if a step is refused (steps replace, never mutate, arrays)."""
        return dict(self._m), dict(self._v)

    def restore(self, state: tuple[Params, Params]) -> None:
        self._m, self._v = dict(state[0]), dict(state[1])

    def step(self, params: Params, update: Params) -> Params:
        return {name: self._step_one(name, params[name], update[name]) for name in params}

    def _step_one(self, name: str, param: np.ndarray, update: np.ndarray) -> np.ndarray:
        if self.kind == "fedavg":
            return (param + self.lr * update).astype(np.float32)
        m = self._m.get(name, np.zeros_like(param))
        if self.kind == "fedavgm":
            m = self.momentum * m + update
            self._m[name] = m
            return (param + self.lr * m).astype(np.float32)
        v = self._v.get(name, np.zeros_like(param))
        m = self.momentum * m + (1 - self.momentum) * update
        v = self.beta2 * v + (1 - self.beta2) * update * update
        self._m[name], self._v[name] = m, v
        return (param + self.lr * m / (np.sqrt(v) + self.eps)).astype(np.float32)
