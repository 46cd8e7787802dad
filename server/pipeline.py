"""The aggregation pipeline of a round: the defences against single replies
(zeroing, the trust region per row, clipping, capped weights:
`server.defences`), aggregation, the server optimiser's step, model pruning,
and the checks before the new model is taken.

A step that would leave the model or the optimiser's state non-finite is
refused with its reason before anything prunes or broadcasts it: the previous
model and the optimiser's previous state are kept and the refusal counted
(`refused` in rounds.csv). What the broadcast cannot represent is no reason
to refuse a step: the downlink clips it (`server.broadcast` counts it).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from prunus.common.config import FederationConfig
from prunus.common.params import NonFiniteModel, Params, check_finite
from prunus.server.aggregators import AGGREGATORS
from prunus.server.defences import Note, defend
from prunus.server.intake import TrainReply
from prunus.server.ledger import RoundLog
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizers import ServerOptimizer

log = logging.getLogger("prunus")


class Outcome(NamedTuple):
    """A round's result: the new model and its step (None: no step taken), and
    the defences' note on each partition's reply they touched."""

    model: Params | None
    step: Params | None
    notes: dict[int, Note]


class AggregationPipeline:
    """Turns a round's accepted replies into the next global model."""

    def __init__(self, settings: FederationConfig, shapes: dict[str, tuple[int, ...]], optimizer: ServerOptimizer,
                 pruner: ModelPruner) -> None:
        self.settings, self.shapes, self.optimizer, self.pruner = settings, shapes, optimizer, pruner
        self.aggregate = AGGREGATORS.get(settings.aggregator)

    def step(self, server_round: int, params: Params, accepted: list[TrainReply], entry: RoundLog) -> Outcome:
        """The new model and the aggregated step it took (None: refused, or no
        reply left to aggregate), and what the defences did to which partition's reply."""
        f = self.settings
        defended = defend([r.update for r in accepted], [r.num_examples for r in accepted], params, f)
        for key, count in defended.counts.items():
            setattr(entry, key, count)
        notes = {accepted[i].partition: note for i, note in defended.notes.items()}
        if defended.counts["zeroed"]:
            kept = set(defended.kept)
            zeroed = [r.partition for i, r in enumerate(accepted) if i not in kept]
            log.warning("round %d: left out %d replies whose norm exceeds %g x the median of the others' "
                        "(partitions %s)", server_round, len(zeroed), f.zero_factor, zeroed[:10])
        if not defended.kept:
            return Outcome(None, None, notes)
        step = self.aggregate(defended.updates, defended.weights, self.shapes, f)
        new = self.apply(server_round, params, step, entry)
        return Outcome(new, None if new is None else step, notes)

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
