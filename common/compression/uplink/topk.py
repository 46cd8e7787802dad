"""`topk`: per tensor, the `ceil(d * numel)` entries of largest magnitude.

With error feedback this is the method that keeps quality at 1% density and
below (Aji & Heafield 2017; Stich et al. 2018). Ties go to the lower index.
"""

from __future__ import annotations

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec, keep_count, top_mask


@UPLINK.register("topk")
class TopK(SparseUplink):
    name = "topk"

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        return {name: top_mask(np.abs(x).ravel(), keep_count(density, x.size)).reshape(x.shape)
                for name, x in arrays.items()}
