"""`rows`: structured; whole rows of largest L2 norm, `ceil(d * rows)` per tensor.

A tensor is viewed as `(shape[0], -1)` (1-D and 0-D tensors as one entry per
row). For an item table that is item pruning, for a dense layer's
`(out, in)` weight it is output-neuron pruning. Exact zeros in a kept row are
not sent.
"""

from __future__ import annotations

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec, keep_count, top_mask


@UPLINK.register("rows")
class Rows(SparseUplink):
    name = "rows"

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        masks = {}
        for name, x in arrays.items():
            rows = x.shape[0] if x.ndim else 1
            m = x.reshape(rows, -1).astype(np.float64)
            norms = np.einsum("ij,ij->i", m, m)  # squared L2 norms, no overflow
            keep = top_mask(norms, keep_count(density, rows))
            masks[name] = (keep[:, None] & (x != 0).reshape(rows, -1)).reshape(x.shape)
        return masks
