"""`threshold`: every entry with `|x| >= prune-threshold` (the density is not used)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.sparse import SparseUplink
from prunus.common.config import non_negative, section
from prunus.common.pruning import PruneSpec

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@section
class ThresholdOptions:
    """`threshold`'s own settings (section `prune-method.threshold`)."""

    prune_threshold: float = field(default=0.0, metadata=non_negative())


@UPLINK.register("threshold")
class Threshold(SparseUplink):
    name = "threshold"
    Options = ThresholdOptions

    def __init__(self, settings: CompressionConfig, options: ThresholdOptions) -> None:
        super().__init__(settings)
        self.options = options
        self.spec = dataclasses.replace(self.spec, threshold=options.prune_threshold)

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        return {name: (np.abs(x) >= spec.threshold) & (x != 0) for name, x in arrays.items()}
