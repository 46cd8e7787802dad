"""`topk-global`: one budget of `ceil(d * total numel)` over all tensors together.

Tensors compete for the budget, so rows that moved most win wherever they
are; tensors are ordered by name before the cut, ties go to the lower index.
"""

from __future__ import annotations

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec, keep_count, top_indices


@UPLINK.register("topk-global")
class TopKGlobal(SparseUplink):
    name = "topk-global"

    @classmethod
    def select(cls, arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        masks = {}
        for name, positions in cls.keep(arrays, spec, density, rng).items():
            masks[name] = np.zeros(arrays[name].shape, dtype=bool)
            masks[name].reshape(-1)[positions] = True
        return masks

    @classmethod
    def keep(cls, arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        """The cut over every tensor's magnitudes laid end to end, in name
        order; the positions found there, split back per tensor."""
        names = sorted(arrays)
        sizes = [arrays[n].size for n in names]
        dtype = np.result_type(*(arrays[n] for n in names)) if names else np.float32
        key = np.empty(sum(sizes), dtype=dtype)
        bounds = np.cumsum([0, *sizes])
        for n, lo, hi in zip(names, bounds[:-1], bounds[1:]):
            np.abs(arrays[n].reshape(-1), out=key[lo:hi])
        positions = top_indices(key, keep_count(density, key.size))
        cuts = np.searchsorted(positions, bounds)
        return {n: positions[cuts[i]:cuts[i + 1]] - bounds[i] for i, n in enumerate(names)}
