"""`ldp`: local differential privacy of every reply.

The client clips its whole update to L2 norm `ldp-clip` and adds Gaussian
noise to every entry it may send (every row it was sent), with the noise
multiplier that makes one reply (`ldp-epsilon`, `ldp-delta`)-DP
(`common.privacy`; a run's guarantee composes over the replies of its
most-sampled client, which `summary.json` reports). Pruning, quantisation and
error feedback act on the noisy update afterwards: post-processing, which DP
survives. The cost: noise in every update, and, unpruned, a dense reply.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import DEFENCES
from prunus.common.compression.base import Defence, Params, RoundContext, rows_outside
from prunus.common.config import positive, section
from prunus.common.privacy import noise_multiplier

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@section
class LocalDPOptions:
    """`ldp`'s own settings (section `defence.ldp`)."""

    ldp_clip: float = field(default=0.1, metadata=positive())
    ldp_epsilon: float = field(default=8.0, metadata=positive())  # per reply
    ldp_delta: float = field(default=1e-5, metadata=positive())


@DEFENCES.register("ldp")
class LocalDP(Defence):
    name = "ldp"
    Options = LocalDPOptions

    def __init__(self, settings: CompressionConfig, options: LocalDPOptions) -> None:
        self.settings = settings
        self.options = options
        self.sigma = noise_multiplier(options.ldp_epsilon, options.ldp_delta)

    def apply(self, delta: Params, positives: np.ndarray, item_tables: tuple[str, ...], ctx: RoundContext,
              scores: np.ndarray | None = None) -> Params:
        clip = self.options.ldp_clip
        norm = float(np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in delta.values())))
        factor = min(1.0, clip / norm) if norm > 0 else 1.0
        rng = ctx.private_rng(23)
        out = {}
        for name, value in delta.items():
            noise = rng.standard_normal(value.shape) * (self.sigma * 2 * clip)
            if ctx.rows is not None and name in ctx.rows:  # only the rows the client was sent may move
                noise[rows_outside(len(value), ctx.rows[name])] = 0.0
            out[name] = (value * factor + noise).astype(np.float32)
        return out
