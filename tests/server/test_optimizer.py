import numpy as np
import pytest

from prunus.common.config import Config
from prunus.server.optimizer import ServerOptimizer


def test_fedavg_adds_the_scaled_update():
    opt = ServerOptimizer("fedavg", lr=2.0)
    out = opt.step({"w": np.ones(2, np.float32)}, {"w": np.array([0.5, -1.0], np.float32)})
    np.testing.assert_allclose(out["w"], [2.0, -1.0])


def test_fedavgm_accumulates_momentum():
    opt = ServerOptimizer("fedavgm", lr=1.0, momentum=0.5)
    params = {"w": np.zeros(1, np.float32)}
    params = opt.step(params, {"w": np.ones(1, np.float32)})  # m = 1
    params = opt.step(params, {"w": np.ones(1, np.float32)})  # m = 1.5
    np.testing.assert_allclose(params["w"], [2.5])


def test_fedadam_normalises_the_step():
    opt = ServerOptimizer("fedadam", lr=0.1, momentum=0.0, beta2=0.0, eps=1e-9)
    out = opt.step({"w": np.zeros(2, np.float32)}, {"w": np.array([100.0, -0.01], np.float32)})
    np.testing.assert_allclose(out["w"], [0.1, -0.1], rtol=1e-5)


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="unknown server optimizer"):
        ServerOptimizer("sgd", lr=1.0)


@pytest.mark.parametrize("kind", ["fedavg", "fedavgm", "fedadam"])
def test_every_optimizer_of_the_federation_section_steps_without_touching_its_input(kind):
    f = Config.of(server_optimizer=kind, server_lr=0.5).federation
    opt = ServerOptimizer(f.server_optimizer, f.server_lr, f.server_momentum, f.server_beta2, f.server_eps)
    params = {"w": np.zeros((2, 2), np.float32), "b": np.ones(2, np.float32)}
    before = {k: v.copy() for k, v in params.items()}
    out = opt.step(params, {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)})
    for name, value in before.items():
        np.testing.assert_array_equal(params[name], value)
        assert out[name].dtype == np.float32 and out[name].shape == value.shape
    assert (out["w"] > 0).all()
    np.testing.assert_array_equal(out["b"], 1.0)  # a zero update leaves a tensor where it was
