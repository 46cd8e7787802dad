"""The stated bound (docs/robustness.md): with the default defences, whatever
the round's replies hold (1e30, 3e38; non-finite values never get this far),
in a round of one reply, of two, or of many, no entry of the model moves by
more than its row's trust region allows through the server optimiser:

    rho_r = max(row-clip-ratio * |w_r|, row-clip * sqrt(width))   (the model before the round)
    FedAvg:  |dw| <= lr * rho_r
    FedAvgM: |dw| <= lr * (mu * |m| + rho_r)
    FedAdam: |dw| <= lr * (beta1 * |m| + (1 - beta1) * rho_r) / (sqrt(beta2 * v) + eps)

with `m`, `v` the optimiser's moments of that entry before the round. Every
tensor role (item table, item bias, a dense layer and its bias), every update
form (dense, sparse, factored with any left factor: a low-rank reply built
with another round's factor is one), every aggregator and both weightings.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunus.common.config import Config
from prunus.common.update import Dense, Factored, nonzeros
from prunus.server.intake import TrainReply
from prunus.server.ledger import RoundLog
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizers import SERVER_OPTIMIZERS, server_optimizer
from prunus.server.pipeline import AggregationPipeline
from prunus.server.robust import row_bounds

SHAPES = {"item_embedding.weight": (5, 4), "item_bias.weight": (5, 1), "mlp.0.weight": (3, 4), "mlp.0.bias": (3,)}
MAGNITUDES = [0.0, 1e-3, 0.5, 3.0, 40.0, 1e6, 1e30, 3e38]
RIGHT = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 2)))[0].T.astype(np.float32)  # the round's factor


def _values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Entries of every magnitude from 0 to 3e38, either sign."""
    return (rng.choice(MAGNITUDES, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


@st.composite
def replies(draw) -> list[TrainReply]:
    """1, 2, 3 or 6 replies, each tensor in a drawn form, with drawn num-examples."""
    out = []
    for partition in range(draw(st.sampled_from([1, 2, 3, 6]))):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        update = {}
        for name, shape in SHAPES.items():
            forms = ["dense", "sparse", "factored"] if len(shape) == 2 and shape[1] > RIGHT.shape[0] else ["dense",
                                                                                                         "sparse"]
            form = draw(st.sampled_from(forms))
            if form == "factored":  # any left factor, lifted with the round's right one
                update[name] = Factored(_values(rng, (shape[0], RIGHT.shape[0])), RIGHT, shape)
            else:
                values = _values(rng, shape)
                update[name] = Dense(values) if form == "dense" else nonzeros(values)
        examples = draw(st.sampled_from([1.0, 20.0, 300.0, 1e30]))
        out.append(TrainReply(partition, partition, update, examples, math.nan))
    return out


def _pipeline(optimizer: str, **changes) -> AggregationPipeline:
    f = Config.of(server_optimizer=optimizer, **changes).federation
    return AggregationPipeline(f, SHAPES, server_optimizer(f), ModelPruner(Config().compression, []))


def _bound(pipeline: AggregationPipeline, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each entry's bound on its change this round (the module's docstring)."""
    f = pipeline.settings
    rho = {name: np.broadcast_to(b.reshape((-1,) + (1,) * (len(SHAPES[name]) - 1)), SHAPES[name])
           for name, b in row_bounds(params, f.row_clip_ratio, f.row_clip).items()}
    first, second = pipeline.optimizer.state()
    m = {name: np.abs(first.get(name, np.zeros(shape))) for name, shape in SHAPES.items()}
    v = {name: second.get(name, np.zeros(shape)) for name, shape in SHAPES.items()}
    lr = f.server_lr
    if f.server_optimizer == "fedavg":
        return {name: lr * rho[name] for name in SHAPES}
    if f.server_optimizer == "fedavgm":
        return {name: lr * (f.server_momentum * m[name] + rho[name]) for name in SHAPES}
    b1, b2, eps = f.server_momentum, f.server_beta2, f.server_eps
    return {name: lr * (b1 * m[name] + (1 - b1) * rho[name]) / (np.sqrt(b2 * v[name]) + eps) for name in SHAPES}


@pytest.mark.parametrize("optimizer", SERVER_OPTIMIZERS.names())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(before=replies(), attack=replies(),
       aggregator=st.sampled_from(["mean", "median", "trimmed-mean"]), row_averaging=st.booleans(),
       lr=st.sampled_from([0.3, 1.0]), scale=st.sampled_from([0.0, 0.5, 30.0]))
def test_no_model_entry_moves_beyond_the_stated_bound(optimizer, before, attack, aggregator, row_averaging, lr, scale):
    pipeline = _pipeline(optimizer, aggregator=aggregator, row_averaging=row_averaging, server_lr=lr,
                         trim_fraction=0.2)
    rng = np.random.default_rng(1)
    params = {name: (scale * rng.standard_normal(shape)).astype(np.float32) for name, shape in SHAPES.items()}
    first = pipeline.step(1, params, before, RoundLog(1))  # a round before: the optimiser's moments are not zero
    params = first.model if first.model is not None else params
    bound = _bound(pipeline, params)
    entry = RoundLog(2)
    outcome = pipeline.step(2, params, attack, entry)
    assert entry.refused == 0  # a bounded step is never one the checks must refuse
    new = outcome.model if outcome.model is not None else params
    for name in SHAPES:
        change = np.abs(new[name].astype(np.float64) - params[name])
        slack = 1e-5 * bound[name] + 4 * np.spacing(np.abs(params[name]) + bound[name]).astype(np.float64)
        assert (change <= bound[name] + slack).all(), (name, float((change - bound[name]).max()))
