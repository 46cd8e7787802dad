"""Server optimisers: each registered under its config name, each a pure step."""

import numpy as np
import pytest

from prunus.common.config import SERVER_OPTIMIZERS as CONFIG_CHOICES
from prunus.common.config import Config, ConfigError
from prunus.server.optimizers import SERVER_OPTIMIZERS, server_optimizer


def _optimizer(kind: str, **settings):
    return server_optimizer(Config.of(server_optimizer=kind, **settings).federation)


def test_fedavg_adds_the_scaled_update():
    opt = _optimizer("fedavg", server_lr=2.0)
    out = opt.step({"w": np.ones(2, np.float32)}, {"w": np.array([0.5, -1.0], np.float32)})
    np.testing.assert_allclose(out["w"], [2.0, -1.0])


def test_fedavgm_accumulates_momentum():
    opt = _optimizer("fedavgm", server_lr=1.0, server_momentum=0.5)
    params = {"w": np.zeros(1, np.float32)}
    params = opt.step(params, {"w": np.ones(1, np.float32)})  # m = 1
    params = opt.step(params, {"w": np.ones(1, np.float32)})  # m = 1.5
    np.testing.assert_allclose(params["w"], [2.5])


def test_fedadam_normalises_the_step():
    opt = _optimizer("fedadam", server_lr=0.1, server_momentum=0.0, server_beta2=1e-12, server_eps=1e-9)
    out = opt.step({"w": np.zeros(2, np.float32)}, {"w": np.array([100.0, -0.01], np.float32)})
    np.testing.assert_allclose(out["w"], [0.1, -0.1], rtol=1e-5)


def test_the_config_knows_exactly_the_registered_optimizers():
    assert set(CONFIG_CHOICES) == set(SERVER_OPTIMIZERS.names())
    with pytest.raises(ConfigError, match="server-optimizer"):
        Config.of(server_optimizer="sgd")


@pytest.mark.parametrize("kind", SERVER_OPTIMIZERS.names())
def test_every_optimizer_steps_without_touching_its_input_and_restores_its_state(kind):
    opt = _optimizer(kind, server_lr=0.5)
    params = {"w": np.zeros((2, 2), np.float32), "b": np.ones(2, np.float32)}
    before = {k: v.copy() for k, v in params.items()}
    update = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    saved = opt.state()
    out = opt.step(params, update)
    for name, value in before.items():
        np.testing.assert_array_equal(params[name], value)
        assert out[name].dtype == np.float32 and out[name].shape == value.shape
    assert (out["w"] > 0).all()
    np.testing.assert_array_equal(out["b"], 1.0)  # a zero update leaves a tensor where it was
    opt.restore(saved)  # a refused step: the next step is the first one again
    again = opt.step(params, update)
    for name in out:
        np.testing.assert_array_equal(again[name], out[name])
