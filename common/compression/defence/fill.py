"""`fill`: fake-item filling (FedRec, Lin et al. 2021).

The client adds `fill-rate` x |P| items it never interacted with to its
update, each with the update of one of its real items (chosen at random,
scaled by a random factor in [1 - s, 1 + s], `fill-spread` s), so the rows that move like
positives are its items plus as many decoys. Decoys are drawn from the rows
the client was sent and did not touch (with a per-client broadcast, ask for
padding rows to draw them from). Their cost: the bytes of the extra rows, and
a little quality (the decoys are pushed toward the user, and the server
averages that in). Composes with pruning and error feedback (it acts on the
update before them). With `fill-repay` the error-feedback residual owes each
decoy's push, so the client's later replies take it back out of the model:
the decoys move the model for a while, not for good (a server that links a
client's replies across rounds can see rows move one way and then back).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import DEFENCES
from prunus.common.compression.base import Defence, Params, RoundContext, rows_outside

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@DEFENCES.register("fill")
class FakeItemFilling(Defence):
    name = "fill"

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings

    @property
    def repays(self) -> bool:
        return self.settings.fill_repay

    @property
    def needs_scores(self) -> bool:
        return self.settings.fill_choice == "plausible"

    def apply(self, delta: Params, positives: np.ndarray, item_tables: tuple[str, ...], ctx: RoundContext,
              scores: np.ndarray | None = None) -> Params:
        n_items = len(delta[item_tables[0]])
        moved = np.zeros(n_items, dtype=bool)
        for name in item_tables:
            moved |= delta[name].reshape(n_items, -1).any(axis=1)
        real = positives[moved[positives]]
        unsent = np.zeros(n_items, dtype=bool) if ctx.rows is None else rows_outside(n_items, ctx.rows[item_tables[0]])
        free = np.flatnonzero(~unsent & ~moved)
        count = min(len(free), math.ceil(self.settings.fill_rate * len(positives)))
        if not len(real) or not count:
            return delta
        rng = np.random.default_rng([ctx.seed, ctx.server_round, ctx.partition_id, 19])
        if self.settings.fill_choice == "plausible" and scores is not None:
            # the items the client's model already likes best: pushing them toward
            # the user moves the model least away from what it predicts
            decoys = free[np.argsort(-scores[free], kind="stable")[:count]]
        else:
            decoys = rng.choice(free, count, replace=False)
        sources = rng.choice(real, count)
        spread = self.settings.fill_spread
        scale = rng.uniform(1 - spread, 1 + spread, count).astype(np.float32)
        out = {name: value.copy() for name, value in delta.items()}
        for name in item_tables:
            out[name][decoys] = delta[name][sources] * scale.reshape(-1, *[1] * (delta[name].ndim - 1))
        return out
