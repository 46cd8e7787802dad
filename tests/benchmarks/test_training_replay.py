"""benchmarks/training_replay.py: a server that replays an MF client's public
training draws names only its items (docs/privacy.md says so until those
draws take the client's secret too; then this test must change)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from prunus.common.config import Config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "training_replay.py"
spec = importlib.util.spec_from_file_location("training_replay", SCRIPT)
training_replay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training_replay)

CFG = Config.of(synthetic_users=40, synthetic_items=200, eval_negatives=9, dim=4, train_negatives=2, local_epochs=1)


def test_the_replayed_negatives_are_exactly_the_touched_rows_that_are_not_items():
    result = training_replay.attack(CFG, every=3, server_round=2)
    assert result["clients"] == 14
    assert result["replay_precision"] == 1.0 and 0.0 < result["replay_recall"] <= 1.0
    assert result["membership_precision"] < result["replay_precision"]


def test_other_settings_are_refused():
    with pytest.raises(SystemExit):
        training_replay.attack(CFG.replace(broadcast_rows="requested"), every=3, server_round=2)
