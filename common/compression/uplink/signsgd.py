"""`signsgd`: every non-zero entry as its sign, with one magnitude per tensor.

Scaled sign compression with error feedback (EF-SignSGD, Karimireddy et al.
2019): one bit per sent entry plus a float32 scale (the mean magnitude), and
the difference to the true update stays in the residual. The density is not
used; with a row-sparse update the index stream costs more than the signs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec


@UPLINK.register("signsgd")
class SignSGD(SparseUplink):
    name = "signsgd"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.spec = dataclasses.replace(self.spec, value_codec="ternary")  # sign + one scale

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        return {name: x != 0 for name, x in arrays.items()}
