"""`randomk`: per tensor, `ceil(d * numel)` positions drawn uniformly among the non-zeros.

A baseline: it shows what magnitude selection is worth. Values are not
rescaled; error feedback keeps the rest. Draws from the client's seeded
generator, so a run is repeatable.
"""

from __future__ import annotations

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec, keep_count


@UPLINK.register("randomk")
class RandomK(SparseUplink):
    name = "randomk"
    draws = True

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        if rng is None:
            raise ValueError("method 'randomk' needs a numpy Generator (rng)")
        masks = {}
        for name, x in arrays.items():
            candidates = np.flatnonzero(x != 0)
            k = min(keep_count(density, x.size), candidates.size)
            mask = np.zeros(x.size, dtype=bool)
            mask[rng.choice(candidates, size=k, replace=False)] = True
            masks[name] = mask.reshape(x.shape)
        return masks
