"""The aggregation pipeline of a round: outliers, clipping, aggregation, the
server optimiser's step, model pruning, and the checks before the new model
is taken.

A step that would leave the model or the optimiser's state non-finite is
refused with its reason before anything prunes or broadcasts it: the previous
model and the optimiser's previous state are kept and the refusal counted
(`refused` in rounds.csv). What the broadcast cannot represent is no reason
to refuse a step: the downlink clips it (`server.broadcast` counts it).
"""

from __future__ import annotations

import logging

import numpy as np

from prunus.common.config import FederationConfig
from prunus.common.params import NonFiniteModel, Params, check_finite
from prunus.server.aggregators import AGGREGATORS
from prunus.server.intake import TrainReply
from prunus.server.ledger import RoundLog
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizers import ServerOptimizer
from prunus.server.robust import clip, outliers

log = logging.getLogger("prunus")


class AggregationPipeline:
    """Turns a round's accepted replies into the next global model."""

    def __init__(self, settings: FederationConfig, shapes: dict[str, tuple[int, ...]], optimizer: ServerOptimizer,
                 pruner: ModelPruner) -> None:
        self.settings, self.shapes, self.optimizer, self.pruner = settings, shapes, optimizer, pruner
        self.aggregate = AGGREGATORS.get(settings.aggregator)

    def step(self, server_round: int, params: Params, accepted: list[TrainReply],
             entry: RoundLog) -> tuple[Params, Params] | None:
        """The new model and the aggregated step it took (None: refused, or no reply left to aggregate)."""
        f = self.settings
        dropped = outliers([r.update for r in accepted], f.zero_factor)
        if dropped:
            entry.zeroed = len(dropped)
            log.warning("round %d: left out %d replies whose norm exceeds %g x the median (partitions %s)",
                        server_round, len(dropped), f.zero_factor, [accepted[i].partition for i in dropped][:10])
            accepted = [r for i, r in enumerate(accepted) if i not in set(dropped)]
            if not accepted:
                return None
        updates = [r.update for r in accepted]
        if f.clip_norm > 0 or f.clip_quantile > 0:
            updates, entry.clipped = clip(updates, f.clip_norm, f.clip_quantile)
        step = self.aggregate(updates, [r.num_examples for r in accepted], self.shapes, f)
        new = self.apply(server_round, params, step, entry)
        return None if new is None else (new, step)

    def apply(self, server_round: int, params: Params, step: Params, entry: RoundLog) -> Params | None:
        """The optimiser's step with an aggregated update, then model pruning (a
        securely aggregated round starts here); None: refused.

        Nothing non-finite goes on: the step, the stepped model and the
        optimiser's new state are checked before pruning, and the optimiser
        takes its new state only when all are finite (otherwise it keeps the
        state it had, like the model)."""
        saved = self.optimizer.state()
        try:
            check_finite(step, "the aggregated step")
            with np.errstate(over="ignore", invalid="ignore"):  # what overflows is refused below
                stepped = self.optimizer.step(params, step)
            check_finite(stepped, "the stepped model")
            first, second = self.optimizer.state()
            check_finite({**first, **{f"{name} (second moment)": v for name, v in second.items()}},
                         "the server optimiser's state")
        except NonFiniteModel as err:
            self.optimizer.restore(saved)
            entry.refused = 1
            log.warning("round %d: step refused, previous model and optimiser state kept: %s", server_round, err)
            return None
        return self.pruner.prune(stepped, server_round)
