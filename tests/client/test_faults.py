"""Fault injection: seeded per client and round, each kind as described."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from prunus.client import faults
from prunus.common.compression import UPLINK, RoundContext
from prunus.common.config import Config, load
from prunus.common.params import npy_array
from prunus.common.payload import Arrays, Content, MetricMap
from prunus.server.validation import ReplyError, validate_train_reply
from prunus.simulations.simulate import run_simulate

DELTA = {"t": np.array([[1.0, -2.0], [0.0, 3.0]], np.float32)}


def _runtime(**overrides):
    return Config.of(**overrides).runtime


def test_faulty_clients_are_a_seeded_share_of_the_sampled_ones():
    settings = _runtime(fault_rate=0.2, seed=3)
    draws = [faults.is_faulty(settings, r, p) for r in range(1, 21) for p in range(100)]
    assert 0.15 < np.mean(draws) < 0.25
    assert draws == [faults.is_faulty(settings, r, p) for r in range(1, 21) for p in range(100)]
    assert not any(faults.is_faulty(_runtime(), r, p) for r in range(1, 5) for p in range(50))  # off by default


@pytest.mark.parametrize(("kind", "expected"), [("scale", 100.0), ("sign-flip", -100.0)])
def test_scaled_and_flipped_updates(kind, expected):
    out = faults.corrupt_update(_runtime(fault_kind=kind), DELTA, 1, 0)
    np.testing.assert_allclose(out["t"], DELTA["t"] * expected)


def test_a_huge_bias_fault_sets_every_bias_entry_and_leaves_the_rest_honest():
    delta = {"item_embedding.weight": DELTA["t"], "item_bias.weight": np.zeros((2, 1), np.float32),
             "mlp.0.bias": np.ones(3, np.float32)}
    out = faults.corrupt_update(_runtime(fault_kind="huge-bias", fault_scale=1e30), delta, 1, 0)
    np.testing.assert_array_equal(out["item_embedding.weight"], DELTA["t"])
    for name in ("item_bias.weight", "mlp.0.bias"):
        assert out[name].dtype == np.float32 and (out[name] == np.float32(1e30)).all()


def test_random_updates_have_the_chosen_size_and_crashes_raise():
    noise = faults.corrupt_update(_runtime(fault_kind="random", fault_scale=10.0), DELTA, 1, 0)["t"]
    assert 3 < np.linalg.norm(noise) / np.linalg.norm(DELTA["t"]) < 30
    with pytest.raises(faults.InjectedCrash):
        faults.corrupt_update(_runtime(fault_kind="crash"), DELTA, 1, 0)


@pytest.mark.parametrize("method", ["none", "topk"])
def test_a_garbage_payload_is_rejected_by_the_server(method):
    cfg = Config.of(prune_method=method, density=0.5)
    uplink = UPLINK.get(method)(cfg.compression)
    record = uplink.encode(DELTA, None, RoundContext(1, 0, 0)).record
    bad = Content({"arrays": faults.garbage(record, 1, 0, 0), "metrics": MetricMap({"num-examples": 2})})
    with pytest.raises(ReplyError):
        validate_train_reply(bad, {"t": (2, 2)}, uplink)


def test_a_run_with_crashing_clients_finishes_and_counts_them(tmp_path):
    settings = ["synthetic-users=40", "synthetic-items=40", "eval-negatives=9", "dim=4", "rounds=3",
                "clients-per-round=10", "engine=inprocess", "fault-rate=0.3", "fault-kind=crash", f"out={tmp_path}"]  # fmt: skip
    summary = run_simulate(load(None, settings))
    assert summary["failures"] > 0 and summary["clients"] - summary["failures"] > 0
    assert np.isfinite(summary["metrics"]["hr@10"])


def test_hung_clients_are_left_behind_and_the_run_goes_on(tmp_path):
    settings = ["synthetic-users=40", "synthetic-items=40", "eval-negatives=9", "dim=4", "rounds=3",
                "clients-per-round=10", "engine=inprocess", "fault-rate=0.3", "fault-kind=hang", "round-timeout=5",
                f"out={tmp_path}"]  # fmt: skip
    summary = run_simulate(load(None, settings))
    assert summary["failures"] > 0 and summary["clients"] - summary["failures"] > 0
    clients = (tmp_path / "clients.csv").read_text()
    assert clients.count("failed") == summary["failures"]
    assert np.isfinite(summary["metrics"]["hr@10"])


def _wrapped(kind: str, isolated: bool = True):
    """`faults.mod` around a stand-in handler that records what it was given."""
    calls = []

    def train(cfg, content, state, client, tamper=None):
        calls.append(tamper)
        delta = tamper({"t": np.ones(2, np.float32)}) if tamper else None
        payload = Arrays({"p": npy_array(np.zeros(64, np.uint8))})
        return Content({"arrays": payload, "metrics": MetricMap({"num-examples": 1}), "delta": delta})

    cfg = load(None, ["fault-rate=1.0", f"fault-kind={kind}", "round-timeout=3"])
    content = Content({"config": {"server-round": 1}})
    return faults.mod(train, isolated), cfg, content, SimpleNamespace(partition_id=0), calls


def test_a_hung_client_sleeps_past_the_round_timeout_or_sends_nothing(monkeypatch):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    handler, cfg, content, client, calls = _wrapped("hang")
    handler(cfg, content, Content(), client)
    assert slept == [3.0 + faults.HANG_MARGIN_S] and calls == [None]  # then an honest reply
    handler, cfg, content, client, calls = _wrapped("hang", isolated=False)
    with pytest.raises(faults.NoReply, match="no reply within the round timeout"):
        handler(cfg, content, Content(), client)
    assert calls == [] and len(slept) == 1


def test_a_dying_client_ends_its_process_or_in_process_sends_nothing(monkeypatch):
    """Under Flower the actor's process ends before any work (the batch's
    retry, `common.flower_compat`, and tests/simulations/test_actor_death.py);
    in process, where that would end the run, the reply never comes."""
    exits = []
    monkeypatch.setattr(faults.os, "_exit", exits.append)
    handler, cfg, content, client, calls = _wrapped("die")
    handler(cfg, content, Content(), client)
    assert exits == [faults.DIE_EXIT_CODE]
    handler, cfg, content, client, calls = _wrapped("die", isolated=False)
    with pytest.raises(faults.NoReply, match="the client's process died"):
        handler(cfg, content, Content(), client)
    assert len(exits) == 1


def test_the_wrapper_tampers_with_the_update_or_the_payload_and_leaves_honest_clients_alone():
    handler, cfg, content, client, calls = _wrapped("scale")
    assert handler(cfg, content, Content(), client)["delta"]["t"].tolist() == [100.0, 100.0]
    handler, cfg, content, client, calls = _wrapped("garbage")
    spoilt = handler(cfg, content, Content(), client)["arrays"]["p"]
    honest = npy_array(np.zeros(64, np.uint8)).data
    assert calls == [None] and spoilt.shape == (len(honest),)  # an honest update, its payload's bytes random
    assert spoilt.numpy().tobytes() != honest
    handler, cfg, content, client, calls = _wrapped("crash")
    with pytest.raises(faults.InjectedCrash):
        handler(cfg, content, Content(), client)
    honest = faults.mod(lambda cfg, content, state, client, tamper=None: calls.append(tamper) or Content())
    honest(load(None, ["fault-rate=0.0"]), content, Content(), client)
    assert calls[-1] is None


@pytest.mark.slow
def test_under_flower_a_hung_client_is_left_behind_at_the_round_timeout(tmp_path):
    """Real Ray actors sleeping past the timeout: the server stops waiting for them.
    (In a subprocess, as a user runs it: Flower's simulation changes the process's
    import path.)"""
    settings = ["synthetic-users=30", "synthetic-items=40", "eval-negatives=9", "dim=4", "rounds=2",
                "clients-per-round=8", "fault-rate=0.25", "fault-kind=hang", "round-timeout=4", "eval-every=2"]  # fmt: skip
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", *(a for s in settings for a in ("--set", s)),
           "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] > 0 and summary["clients"] - summary["failures"] > 0
    assert summary["failures"] == (tmp_path / "clients.csv").read_text().count("failed")
    assert "no reply within the round timeout (4 s)" in done.stdout + done.stderr
