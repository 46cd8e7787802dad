"""Client state in shared memory: two versions per partition, the one a
retry needs kept, a state that outgrows its slot moved, a half-written slot
never read, and a killed run's store removed by the next run."""

import os
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.client import state_slots
from prunus.common.params import from_record, to_record
from prunus.common.payload import Content


def _state(values: np.ndarray) -> Content:
    return Content({"residual": to_record({"r": values.astype(np.float32)})})


def _values(state: Content | None) -> np.ndarray | None:
    return None if state is None else from_record(state["residual"])["r"]


def test_a_save_keeps_the_version_before_it_for_a_retry(tmp_path):
    for server_round in (3, 7, 9):
        state_slots.save(tmp_path, 0, server_round, _state(np.full(10, server_round)))
    assert np.array_equal(_values(state_slots.load(tmp_path, 0, 8)), np.full(10, 7))  # round 9 retried
    assert np.array_equal(_values(state_slots.load(tmp_path, 0, 9)), np.full(10, 9))
    assert state_slots.load(tmp_path, 0, 6) is None  # round 3's slot now holds round 9
    state_slots.save(tmp_path, 0, 9, _state(np.full(10, -9)))  # the retry writes over its own round
    assert np.array_equal(_values(state_slots.load(tmp_path, 0, 8)), np.full(10, 7))
    assert np.array_equal(_values(state_slots.load(tmp_path, 0, 9)), np.full(10, -9))


def test_a_state_larger_than_its_slot_moves_the_partition_with_both_versions(tmp_path):
    state_slots.save(tmp_path, 1, 1, _state(np.arange(8)))
    state_slots.save(tmp_path, 1, 2, _state(np.arange(100_000)))  # 400 KB: more than the 64 KiB slot
    assert np.array_equal(_values(state_slots.load(tmp_path, 1, 1)), np.arange(8))
    assert np.array_equal(_values(state_slots.load(tmp_path, 1, 2)), np.arange(100_000))
    assert sorted(os.listdir(tmp_path)) == ["1.slots"]


def test_another_process_reads_what_this_one_wrote_and_the_other_way(tmp_path):
    state_slots.save(tmp_path, 2, 1, _state(np.arange(5)))
    code = ("import sys, numpy as np; from pathlib import Path; from prunus.client import state_slots; "
            "from prunus.common.params import from_record, to_record; from prunus.common.payload import Content; "
            "s = Path(sys.argv[1]); assert list(from_record(state_slots.load(s, 2, 1)['residual'])['r']) == "
            "[0, 1, 2, 3, 4]; state_slots.save(s, 2, 2, Content({'residual': to_record({'r': "
            "np.arange(100_000, dtype=np.float32)})}))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert np.array_equal(_values(state_slots.load(tmp_path, 2, 2)), np.arange(100_000))  # moved by the other
    assert np.array_equal(_values(state_slots.load(tmp_path, 2, 1)), np.arange(5))


def test_a_slot_being_written_is_never_read(tmp_path):
    state_slots.save(tmp_path, 3, 1, _state(np.ones(4)))
    state_slots.save(tmp_path, 3, 2, _state(np.full(4, 2.0)))
    path = tmp_path / "3.slots"
    m = state_slots._map(path, fd := os.open(path, os.O_RDWR), os.fstat(fd))
    os.close(fd)
    m.mark(1, state_slots._EMPTY, 0)  # what a writer killed mid-copy leaves
    assert np.array_equal(_values(state_slots.load(tmp_path, 3, 2)), np.ones(4))


def test_a_killed_runs_store_is_removed_by_the_next_run_on_the_host(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.split()[0]
    old, other_host, mine = tmp_path / "prunus-old-1", tmp_path / "prunus-far-2", tmp_path / "prunus-new-3"
    for store, owner in ((old, f"{os.uname().nodename} {dead}"), (other_host, f"elsewhere {dead}")):
        store.mkdir()
        (store / state_slots.OWNER).write_text(owner)
    state_slots.claim(mine)
    assert not old.exists() and other_host.exists()
    assert (mine / state_slots.OWNER).read_text().split()[1] == str(os.getpid())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=12))
def test_the_newest_version_up_to_a_round_is_the_one_read(tmp_path_factory, rounds):
    store = tmp_path_factory.mktemp("slots")
    written = []
    for server_round in sorted(rounds):
        state_slots.save(store, 0, server_round, _state(np.full(3, server_round)))
        written.append(server_round)
        kept = sorted(set(written))[-2:]
        for upto in range(0, 32):
            expected = max((v for v in kept if v <= upto), default=None)
            got = _values(state_slots.load(store, 0, upto))
            assert (got is None) if expected is None else (got is not None and got[0] == expected)
