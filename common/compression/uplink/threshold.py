"""`threshold`: every entry with `|x| >= prune-threshold` (the density is not used)."""

from __future__ import annotations

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec


@UPLINK.register("threshold")
class Threshold(SparseUplink):
    name = "threshold"

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        return {name: (np.abs(x) >= spec.threshold) & (x != 0) for name, x in arrays.items()}
