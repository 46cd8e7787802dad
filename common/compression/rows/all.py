"""`all`: every message carries the whole model (FedAvg's broadcast)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import ROWS
from prunus.common.compression.base import RoundContext, RowPlan, RowSelection

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@ROWS.register("all")
class AllRows(RowSelection):
    name = "all"
    queries = False

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings

    def plan(self, needed: np.ndarray, n_items: int, ctx: RoundContext) -> RowPlan | None:
        return None

    def rows(self, server_round: int, request: np.ndarray | None, n_items: int, purpose: str,
             seed: int) -> np.ndarray | None:
        return None
