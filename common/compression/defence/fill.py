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
from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.compression import DEFENCES
from prunus.common.compression.base import Defence, Params, RoundContext, rows_outside
from prunus.common.config import ConfigError, choice, non_negative, positive, section

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig, Config


@section
class FillOptions:
    """`fill`'s own settings (section `defence.fill`)."""

    fill_rate: float = field(default=1.0, metadata=positive())  # decoys per positive
    # decoys drawn at random ("random") or as the client's model's best-scored
    # items it did not interact with ("plausible", MF)
    fill_choice: str = field(default="random", metadata=choice("random", "plausible"))
    # a decoy is a real item's update times a factor drawn from [1 - s, 1 + s]
    fill_spread: float = field(default=0.5, metadata=non_negative())
    # pay the decoys back through error feedback: the client's residual owes
    # each decoy's push, so its later replies take it back out of the model
    fill_repay: bool = False

    def __post_init__(self) -> None:
        if self.fill_spread > 1:
            raise ConfigError(f"fill-spread: must be in [0, 1], got {self.fill_spread!r}")

    def check(self, cfg: Config) -> None:
        """What the shared sections must hold for these settings."""
        c = cfg.compression
        if self.fill_repay and not (c.defence == "fill" and c.error_feedback and c.prune_method != "none"):
            raise ConfigError("fill-repay: needs defence = \"fill\" and a pruning method with error-feedback = true "
                              "(the residual is what pays the decoys back)")


@DEFENCES.register("fill")
class FakeItemFilling(Defence):
    name = "fill"
    Options = FillOptions

    def __init__(self, settings: CompressionConfig, options: FillOptions) -> None:
        self.settings = settings
        self.options = options

    @property
    def repays(self) -> bool:
        return self.options.fill_repay

    @property
    def needs_scores(self) -> bool:
        return self.options.fill_choice == "plausible"

    def apply(self, delta: Params, positives: np.ndarray, item_tables: tuple[str, ...], ctx: RoundContext,
              scores: np.ndarray | None = None) -> Params:
        n_items = len(delta[item_tables[0]])
        moved = np.zeros(n_items, dtype=bool)
        for name in item_tables:
            moved |= delta[name].reshape(n_items, -1).any(axis=1)
        real = positives[moved[positives]]
        unsent = np.zeros(n_items, dtype=bool) if ctx.rows is None else rows_outside(n_items, ctx.rows[item_tables[0]])
        free = np.flatnonzero(~unsent & ~moved)
        count = min(len(free), math.ceil(self.options.fill_rate * len(positives)))
        if not len(real) or not count:
            return delta
        rng = ctx.private_rng(19)
        if self.options.fill_choice == "plausible" and scores is not None:
            # the items the client's model already likes best: pushing them toward
            # the user moves the model least away from what it predicts
            decoys = free[np.argsort(-scores[free], kind="stable")[:count]]
        else:
            decoys = rng.choice(free, count, replace=False)
        sources = rng.choice(real, count)
        spread = self.options.fill_spread
        scale = rng.uniform(1 - spread, 1 + spread, count).astype(np.float32)
        out = {name: value.copy() for name, value in delta.items()}
        for name in item_tables:
            out[name][decoys] = delta[name][sources] * scale.reshape(-1, *[1] * (delta[name].ndim - 1))
        return out
