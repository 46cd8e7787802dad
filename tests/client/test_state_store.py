"""The client-state store of a checkpointed simulation: the version a resume
needs is kept and found; versions nobody will read again are dropped."""

import numpy as np
from flwr.app import RecordDict

from prunus.client import state_store
from prunus.common.config import Config
from prunus.common.params import to_record


def _state(value: float) -> RecordDict:
    return RecordDict({"private": to_record({"u": np.full((2, 3), value, np.float32)})})


def test_a_resumed_client_reads_its_latest_state_from_before_the_checkpoint(tmp_path):
    cfg = Config.of(checkpoint_every=4, out=str(tmp_path))
    for server_round in (1, 3, 6, 7):  # trained in these rounds
        state_store.persist(cfg, _state(server_round), 5, server_round)
    # a resume from the checkpoint of round 4 runs round 5 on: it needs round 3's state
    state = RecordDict()
    state_store.restore_if_empty(cfg, state, 5, 5)
    assert state["private"]["u"].numpy()[0, 0] == 3.0
    # round 1's state can never be read again (every later resume has round 3 or newer)
    assert sorted(p.name for p in (tmp_path / "client-state" / "5").iterdir()) == ["3.npz", "6.npz", "7.npz"]
    kept = RecordDict({"private": to_record({"u": np.zeros((2, 3), np.float32)})})
    state_store.restore_if_empty(cfg, kept, 5, 9)  # a client with state in memory keeps it
    assert kept["private"]["u"].numpy().sum() == 0


def test_without_checkpoints_nothing_is_written(tmp_path):
    cfg = Config.of(out=str(tmp_path))
    state_store.persist(cfg, _state(1.0), 0, 1)
    assert not (tmp_path / "client-state").exists()
