"""A client actor killed in the middle of a batch costs only the message it
was running (issue 30: failure stays small), through Flower's Simulation
Engine and real Ray processes, and the console says so in one line.

One client actor (`ray-share` makes the pool one actor whatever the CPUs) gets
each round's 16 messages in one batch; the one client drawn to `die` ends
the actor's process (`os._exit`) every time it runs its message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunus.client.faults import is_faulty
from prunus.common.config import load

pytestmark = pytest.mark.slow

SETTINGS = ["synthetic-users=40", "synthetic-items=60", "eval-negatives=20", "dim=8", "rounds=2",
            "clients-per-round=16", "eval-every=2", "seed=7", "client-batch=16", "ray-share=1000",
            "fault-kind=die", "fault-rate=0.06"]  # fmt: skip


def test_a_killed_actor_fails_only_the_message_it_was_running(tmp_path: Path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate",
           *(arg for s in SETTINGS for arg in ("--set", s)), "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]

    runtime = load(None, SETTINGS).runtime
    clients = pd.read_csv(out / "clients.csv")
    train = clients[clients["kind"] == "train"]
    killers = {}
    for server_round, rows in train.groupby("round"):
        status = dict(zip(rows["partition"], rows["status"]))
        assert len(status) == 16
        killers[server_round] = {p for p in status if is_faulty(runtime, int(server_round), int(p))}
        assert {p for p, s in status.items() if s == "failed"} == killers[server_round]
        assert {p for p, s in status.items() if s == "accepted"} == set(status) - killers[server_round]
    assert [len(k) for k in killers.values()] == [1, 1]  # one dying client a round (the seed's draw)

    # the console: one line per round for the dead actor's message, no Ray text beyond its first line
    lines = console.splitlines()
    for server_round in killers:
        told = [line for line in lines if f"round {server_round}: " in line and "failed" in line]
        assert len(told) == 1 and "ActorDiedError" in told[0], told
    assert max(map(len, lines)) < 400 and "actor_id" not in console and "Worker exit" not in console
    log = (out / "run.log").read_text()
    assert "actor_id" in log and "each goes again alone" in log  # the full text and the retry, in run.log
    assert re.search(r"client batches: .*2 messages lost", log)  # the run's count
    assert np.isfinite(pd.read_csv(out / "rounds.csv")["hr@10"].iloc[-1])
