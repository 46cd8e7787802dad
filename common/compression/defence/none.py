"""`none`: the update as trained."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import DEFENCES
from prunus.common.compression.base import Defence, Params, RoundContext

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@DEFENCES.register("none")
class NoDefence(Defence):
    name = "none"

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings

    def apply(self, delta: Params, positives: np.ndarray, item_tables: tuple[str, ...], ctx: RoundContext,
              scores: np.ndarray | None = None) -> Params:
        return delta
