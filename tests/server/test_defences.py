"""The default defences against the issue's replies (`server.defences`): small
rounds, one client on a row, num-examples of 1e30, FedAdam's second moment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prunus.common.config import Config
from prunus.common.update import Dense
from prunus.server.defences import defend
from prunus.server.intake import TrainReply
from prunus.server.ledger import RoundLog
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizers import SERVER_OPTIMIZERS, server_optimizer
from prunus.server.pipeline import AggregationPipeline

SHAPES = {"item_embedding.weight": (4, 2), "item_bias.weight": (4, 1)}
PARAMS = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}
ROOM = 4.0  # the default trust region of a bias entry near 0.5: max(1 x 0.5, 4 x sqrt(1))


def _reply(partition: int, embedding: float, bias: float, examples: float = 10.0) -> TrainReply:
    update = {"item_embedding.weight": Dense(np.full((4, 2), embedding, np.float32)),
              "item_bias.weight": Dense(np.full((4, 1), bias, np.float32))}
    return TrainReply(partition, partition, update, examples, math.nan)


def _pipeline(**changes) -> AggregationPipeline:
    f = Config.of(**changes).federation
    return AggregationPipeline(f, SHAPES, server_optimizer(f), ModelPruner(Config().compression, []))


@pytest.mark.parametrize("optimizer", SERVER_OPTIMIZERS.names())
def test_a_1e30_bias_reply_in_a_round_of_two_is_left_out(optimizer):
    entry = RoundLog(1)
    outcome = _pipeline(server_optimizer=optimizer).step(1, PARAMS, [_reply(0, 0.1, 0.1), _reply(1, 0.1, 1e30)], entry)
    assert entry.zeroed == 1 and outcome.notes[1].defence == "zeroed" and 0 not in outcome.notes
    alone = _pipeline(server_optimizer=optimizer).step(1, PARAMS, [_reply(0, 0.1, 0.1)], RoundLog(1))
    for name in SHAPES:  # the round is the honest reply's
        np.testing.assert_array_equal(outcome.model[name], alone.model[name])


@pytest.mark.parametrize("optimizer", SERVER_OPTIMIZERS.names())
def test_a_lone_1e30_reply_moves_a_bias_by_its_trust_region_at_most(optimizer):
    """A round of one reply has nothing to judge it against: the trust region
    per row, relative to the model, still bounds it."""
    entry = RoundLog(1)
    outcome = _pipeline(server_optimizer=optimizer).step(1, PARAMS, [_reply(0, 0.1, 1e30)], entry)
    assert entry.row_clipped == 1 and outcome.notes[0].defence == "row-clipped" and entry.refused == 0
    bounded = _pipeline(server_optimizer=optimizer).step(1, PARAMS, [_reply(0, 0.1, ROOM)], RoundLog(1))
    for name in SHAPES:  # as if it had sent its bias at the trust region's edge; the embedding untouched
        np.testing.assert_allclose(outcome.model[name], bounded.model[name], rtol=1e-6)
    assert np.abs(outcome.model["item_bias.weight"] - 0.5).max() <= ROOM + 1e-5


def test_fedadam_keeps_a_finite_second_moment_after_a_1e25_reply():
    """The issue's FedAdam crash: one reply of 1e25 on a row set its second
    moment to inf. Now its row is clipped to the trust region before the
    optimiser sees it: no refusal, v finite, and the row goes on moving."""
    pipeline = _pipeline(server_optimizer="fedadam")
    hostile = _reply(0, 0.1, 0.1)
    hostile.update["item_embedding.weight"].values[2, 0] = 1e25
    outcome = pipeline.step(1, PARAMS, [hostile, _reply(1, 0.1, 0.1), _reply(2, 0.1, 0.1)], entry := RoundLog(1))
    assert entry.refused == 0 and entry.zeroed == 1  # a round of three: left out outright
    outcome = pipeline.step(2, outcome.model, [hostile], entry := RoundLog(2))  # alone: clipped to its trust region
    assert entry.refused == 0 and entry.row_clipped == 1
    assert all(np.isfinite(v).all() and v.max() < 1e3 for v in pipeline.optimizer.state()[1].values())
    after = pipeline.step(3, outcome.model, [_reply(1, -0.1, 0.0)], RoundLog(3)).model
    assert abs(after["item_embedding.weight"][2, 0] - outcome.model["item_embedding.weight"][2, 0]) > 0.1  # not frozen


def test_num_examples_of_1e30_no_longer_owns_a_fedavg_step():
    """FedAvg weighting (row-averaging off): a reply's weight counts at most
    weight-cap x the median of the others'."""
    replies = [_reply(p, 0.1, 0.1, examples=100.0) for p in range(3)] + [_reply(3, -0.1, -0.1, examples=1e30)]
    defended = defend([r.update for r in replies], [r.num_examples for r in replies], PARAMS,
                      Config.of(row_averaging=False).federation)
    assert defended.weights == [100.0, 100.0, 100.0, 1000.0] and defended.notes[3].defence == "weight-capped"
    step = _pipeline(row_averaging=False).step(1, PARAMS, replies, RoundLog(1)).step
    np.testing.assert_allclose(step["item_bias.weight"], (3 * 100 * 0.1 - 1000 * 0.1) / 1300, rtol=1e-5)
    uncapped = _pipeline(row_averaging=False, weight_cap=0.0).step(1, PARAMS, replies, RoundLog(1)).step
    np.testing.assert_allclose(uncapped["item_bias.weight"], -0.1, rtol=1e-5)  # what it was: the hostile reply's


def test_under_row_averaging_num_examples_weigh_nothing_and_nothing_is_capped():
    replies = [_reply(0, 0.1, 0.1, examples=1.0), _reply(1, 0.3, 0.3, examples=1e30)]
    defended = defend([r.update for r in replies], [r.num_examples for r in replies], PARAMS, Config().federation)
    assert defended.weights == [1.0, 1e30] and not defended.notes  # the mean ignores them
    step = _pipeline().step(1, PARAMS, replies, RoundLog(1)).step
    np.testing.assert_allclose(step["item_bias.weight"], 0.2, rtol=1e-5)
