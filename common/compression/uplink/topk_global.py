"""`topk-global`: one budget of `ceil(d * total numel)` over all tensors together.

Tensors compete for the budget, so rows that moved most win wherever they
are; tensors are ordered by name before the cut, ties go to the lower index.
"""

from __future__ import annotations

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec, keep_count, top_mask


@UPLINK.register("topk-global")
class TopKGlobal(SparseUplink):
    name = "topk-global"

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        names = sorted(arrays)
        sizes = [arrays[n].size for n in names]
        dtype = np.result_type(*(arrays[n] for n in names)) if names else np.float32
        key = np.empty(sum(sizes), dtype=dtype)  # every tensor's magnitudes, one after another
        bounds = np.cumsum([0, *sizes])
        spans = {n: slice(lo, hi) for n, lo, hi in zip(names, bounds[:-1], bounds[1:])}
        for n, span in spans.items():
            np.abs(arrays[n].ravel(), out=key[span])
        allmask = top_mask(key, keep_count(density, key.size))
        return {n: allmask[spans[n]].reshape(arrays[n].shape) for n in arrays}
