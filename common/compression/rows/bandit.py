"""`bandit`: the server picks the item rows of each round by Thompson sampling
(in the spirit of FCF-BTS, Khan et al., RecSys 2021).

Each item is an arm. Every training round the server draws a score per item
from its posterior, sends the `bandit-items` share of rows with the highest
scores to every client of the round (with their ids), and clients train on
those rows only: their positives among them, negatives drawn from them. The
reward of a sent row is the norm of the round's aggregated update of it,
relative to the round's largest: rows whose updates still move the model are
worth sending. Posterior: a Gaussian per item, mean of its rewards (prior
mean 1, so rows never tried are tried), spread shrinking as 1/sqrt(n+1).
Federated evaluation messages carry every row (clients rank candidates).
Random draws come from (seed, round) alone.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import ROWS
from prunus.common.compression.base import Params, RoundContext, RowPlan, RowSelection
from prunus.common.config import positive, section

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig

PRIOR_MEAN, SPREAD = 1.0, 0.5


@section
class BanditOptions:
    """`bandit`'s own settings (section `broadcast-rows.bandit`)."""

    bandit_items: float = field(default=0.25, metadata=positive())  # share of item rows a bandit round sends


@ROWS.register("bandit")
class BanditRows(RowSelection):
    name = "bandit"
    queries = False
    Options = BanditOptions

    def __init__(self, settings: CompressionConfig, options: BanditOptions) -> None:
        self.settings = settings
        self.options = options
        self.reward_sum: np.ndarray | None = None  # per item
        self.pulls: np.ndarray | None = None
        self._chosen: tuple[int, np.ndarray] | None = None  # (round, rows)

    # ---------------------------------------------------------- client half
    def plan(self, needed: np.ndarray, n_items: int, ctx: RoundContext) -> RowPlan | None:
        return None  # the server chooses; its message names the rows

    # ---------------------------------------------------------- server half
    def rows(self, server_round: int, request: np.ndarray | None, n_items: int, purpose: str,
             seed: int) -> np.ndarray | None:
        if purpose != "train":
            return None
        if self._chosen is None or self._chosen[0] != server_round:
            if self.pulls is None:
                self.reward_sum, self.pulls = np.zeros(n_items), np.zeros(n_items)
            rng = np.random.default_rng([seed, server_round, 13])
            mean = (PRIOR_MEAN + self.reward_sum) / (1 + self.pulls)
            score = mean + SPREAD * rng.standard_normal(n_items) / np.sqrt(1 + self.pulls)
            count = min(n_items, math.ceil(self.options.bandit_items * n_items))
            self._chosen = (server_round, np.sort(np.argsort(-score, kind="stable")[:count]).astype(np.int64))
        return self._chosen[1]

    def observe(self, server_round: int, step: Params, item_tables: tuple[str, ...]) -> None:
        """Rewards of the round's rows from its aggregated update."""
        if self._chosen is None or self._chosen[0] != server_round or self.pulls is None:
            return
        ids = self._chosen[1]
        norm = np.zeros(len(ids))
        for name in item_tables:
            if name in step:
                rows = step[name].reshape(len(step[name]), -1)[ids].astype(np.float64)
                norm += (rows**2).sum(1)
        norm = np.sqrt(norm)
        self.reward_sum[ids] += norm / norm.max() if norm.max() > 0 else 0.0
        self.pulls[ids] += 1

    def state(self) -> Params:
        return {} if self.pulls is None else {"reward-sum": self.reward_sum, "pulls": self.pulls}

    def restore(self, state: Params) -> None:
        if state:
            self.reward_sum, self.pulls = state["reward-sum"].astype(np.float64), state["pulls"].astype(np.float64)
