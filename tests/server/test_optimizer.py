import numpy as np

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
