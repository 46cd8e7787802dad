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
        flat = [np.abs(arrays[n]).ravel() for n in names]
        total = sum(f.size for f in flat)
        allmask = top_mask(np.concatenate(flat) if flat else np.zeros(0), keep_count(density, total))
        out, at = {}, 0
        for n, f in zip(names, flat):
            out[n] = allmask[at:at + f.size].reshape(arrays[n].shape)
            at += f.size
        return {n: out[n] for n in arrays}
