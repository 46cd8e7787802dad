"""The aggregation pipeline's checks (`server.pipeline`): nothing non-finite goes on.

A step that would leave the model or a server optimiser's state non-finite is
refused and counted before pruning sees it; the model and the optimiser's
state stay what they were, and the run goes on from them as if the refused
step had never come.
"""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.config import Config
from prunus.common.params import non_finite
from prunus.server.ledger import RoundLog
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizers import SERVER_OPTIMIZERS, server_optimizer
from prunus.server.pipeline import AggregationPipeline

SHAPES = {"item_embedding.weight": (6, 2), "item_bias.weight": (6, 1)}
PARAMS = {name: np.full(shape, 0.5, np.float32) for name, shape in SHAPES.items()}


def _pipeline(**settings) -> AggregationPipeline:
    cfg = Config.of(**settings)
    return AggregationPipeline(cfg.federation, SHAPES, server_optimizer(cfg.federation),
                               ModelPruner(cfg.compression, ["item_embedding.weight"]))


def _step(value: float, at: tuple[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """A small step everywhere; `value` at one entry (`at`) or everywhere."""
    step = {name: np.full(shape, 0.01 if at else value, np.float32) for name, shape in SHAPES.items()}
    if at:
        step[at[0]][at[1]] = value
    return step


def _state(pipeline: AggregationPipeline):
    first, second = pipeline.optimizer.state()
    return {k: v.copy() for k, v in first.items()}, {k: v.copy() for k, v in second.items()}


def _same_state(a, b) -> bool:
    return all(set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


HOSTILE = {
    "NaN on an item row": (np.nan, ("item_embedding.weight", (2, 1))),
    "inf on a bias": (np.inf, ("item_bias.weight", (4, 0))),
    "-inf everywhere": (-np.inf, None),
    "3.4e38 everywhere (overflows FedAdam's second moment)": (3.4e38, None),
    "1e25 on one entry (FedAdam's second moment overflows)": (1e25, ("item_embedding.weight", (0, 0))),
}


@pytest.mark.parametrize("hostile", HOSTILE, ids=list(HOSTILE))
@pytest.mark.parametrize("optimizer", SERVER_OPTIMIZERS.names())
def test_a_non_finite_result_is_refused_and_the_model_and_optimiser_state_kept(optimizer, hostile):
    value, at = HOSTILE[hostile]
    pipeline, shadow = _pipeline(server_optimizer=optimizer), _pipeline(server_optimizer=optimizer)
    entry = RoundLog(1)
    params = pipeline.apply(1, PARAMS, _step(0.1), entry)  # a good step first: the optimiser has a state
    assert shadow.apply(1, PARAMS, _step(0.1), RoundLog(1)) is not None
    before = _state(pipeline)
    new = pipeline.apply(2, params, _step(value, at), entry := RoundLog(2))
    if np.isfinite(value) and optimizer != "fedadam":  # a finite model and state: this step is taken
        assert new is not None and entry.refused == 0 and not non_finite(new)
        return
    assert new is None and entry.refused == 1
    assert _same_state(_state(pipeline), before)  # the refused step left no trace in the optimiser
    # the run goes on from the last good model and state, as if the step had never come
    following = pipeline.apply(3, params, _step(0.2), RoundLog(3))
    expected = shadow.apply(3, params, _step(0.2), RoundLog(3))
    for name in SHAPES:
        np.testing.assert_array_equal(following[name], expected[name])
    assert all(not non_finite(part) for part in pipeline.optimizer.state())


def test_fedadam_keeps_moving_a_row_after_a_huge_reply_was_refused():
    """The audit's case: one reply of 1e25 set a row's second moment to inf and the row never moved again."""
    pipeline = _pipeline(server_optimizer="fedadam", server_lr=0.1)
    params = pipeline.apply(1, PARAMS, _step(0.1), RoundLog(1))
    assert pipeline.apply(2, params, _step(1e25, ("item_embedding.weight", (0, 0))), RoundLog(2)) is None
    moved = pipeline.apply(3, params, _step(0.1), RoundLog(3))
    assert moved["item_embedding.weight"][0, 0] > params["item_embedding.weight"][0, 0]
    assert np.isfinite(pipeline.optimizer.state()[1]["item_embedding.weight"]).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, 3.4e38])
def test_a_non_finite_model_never_reaches_model_pruning(value, monkeypatch):
    """With model pruning on, 3.4e38 repeated used to end the run with pruning's ValueError."""
    pipeline = _pipeline(model_sparsity=0.5, model_prune_start=1, model_prune_end=2)
    pruned = []
    prune = pipeline.pruner.prune
    monkeypatch.setattr(pipeline.pruner, "prune", lambda params, r: pruned.append(r) or prune(params, r))
    params = pipeline.apply(1, PARAMS, _step(value), RoundLog(1)) if value == 3.4e38 else PARAMS
    entry = RoundLog(2)
    assert pipeline.apply(2, params, _step(value), entry) is None and entry.refused == 1
    assert 2 not in pruned


def test_a_securely_aggregated_step_gets_the_same_checks(make_train_reply):
    """Secure rounds hand their recovered sum to `apply`: a non-finite one is refused there."""
    from prunus.common.models import ModelSpec
    from prunus.server.federation import Federation
    from prunus.server.ledger import Ledger

    class Sum:  # what `SecureRounds.train` returns: the round's mean step
        def train(self, server_round, chosen, params, transport, entry):
            return _step(np.nan, ("item_bias.weight", (1, 0)))

    spec = ModelSpec(SHAPES, ("item_embedding.weight",), ("item_embedding.weight",))
    federation = Federation(Config.of(clients_per_round=2), [0, 1], dict(PARAMS), spec, lambda p, r: {}, Ledger())
    federation.secure = Sum()
    federation.train(1, transport=None)
    assert federation.ledger.round(1).refused == 1
    for name, value in PARAMS.items():
        np.testing.assert_array_equal(federation.params[name], value)
