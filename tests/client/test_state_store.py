"""The client-state store of a simulation: a client finds its latest state;
with checkpoints the version a resume needs is kept and found; versions
nobody will read again are dropped."""

import numpy as np
import pytest

from prunus.client import state_store
from prunus.common.config import Config, ConfigError
from prunus.common.params import to_record
from prunus.common.payload import Content

N_ITEMS = 50  # the data set's items (what a mapped state may come to)


def _state(value: float) -> Content:
    return Content({"private": to_record({"u": np.full((2, 3), value, np.float32)})})


def test_a_resumed_client_reads_its_latest_state_from_before_the_checkpoint(tmp_path):
    cfg = Config.of(checkpoint_every=4, out=str(tmp_path))
    for server_round in (1, 3, 6, 7):  # trained in these rounds
        state_store.persist(cfg, _state(server_round), 5, server_round, N_ITEMS)
    state_store.settle()
    # round 1's state can never be read again (every later resume has round 3 or newer)
    assert sorted(p.name for p in (tmp_path / "client-state" / "5").iterdir()) == ["1.state", "3.state", "6.state", "7.state"]
    # a resume from the checkpoint of round 4 runs round 5 on: it needs round 3's state
    state_store.rewind(cfg, 4)
    state = Content()
    state_store.restore(cfg, state, 5, 4)
    assert state["private"]["u"].numpy()[0, 0] == 3.0
    assert sorted(p.name for p in (tmp_path / "client-state" / "5").iterdir()) == ["1.state", "3.state"]
    kept = Content({"private": to_record({"u": np.zeros((2, 3), np.float32)})})
    state_store.restore(cfg, kept, 5, 8)  # a client with state in memory keeps it
    assert kept["private"]["u"].numpy().sum() == 0


def test_without_checkpoints_a_client_keeps_only_its_latest_state(tmp_path):
    cfg = Config.of(out=str(tmp_path))
    for server_round in (1, 4):
        state_store.persist(cfg, _state(server_round), 0, server_round, N_ITEMS)
    state_store.settle()
    assert sorted(p.name for p in (tmp_path / "client-state" / "0").iterdir()) == ["1.state", "4.state"]
    state = Content()
    state_store.restore(cfg, state, 0, 5)
    assert state["private"]["u"].numpy()[0, 0] == 4.0
    fresh = Content()
    state_store.restore(cfg, fresh, 1, 5)  # a client never trained has no state
    assert not len(fresh)


def test_a_state_comes_back_as_it_was_saved(tmp_path):
    """Arrays go to disk as their serialised bytes: any dtype and shape, exactly."""
    arrays = {"u": np.arange(6, dtype=np.float32).reshape(2, 3), "idx": np.array([3, 9, 2**40], np.int64),
              "empty": np.zeros((0, 4), np.float32), "half": np.array([1.5, -0.0], np.float16)}  # fmt: skip
    state = Content({"private": to_record({"u": arrays["u"]}),
                        "residual": to_record({k: v for k, v in arrays.items() if k != "u"})})  # fmt: skip
    cfg = Config.of(out=str(tmp_path))
    state_store.persist(cfg, state, 3, 2, N_ITEMS)
    back = Content()
    state_store.restore(cfg, back, 3, 2)
    assert list(back) == ["private", "residual"]
    for record in back:
        for name, array in back[record].items():
            restored = array.numpy()
            assert restored.dtype == arrays[name].dtype and restored.shape == arrays[name].shape
            np.testing.assert_array_equal(restored, arrays[name])


def test_a_truncated_state_file_is_an_error_naming_it(tmp_path):
    """A version cut short (a full disk, a copy stopped half-way) is not read as a smaller state."""
    cfg = Config.of(out=str(tmp_path))
    state_store.persist(cfg, _state(1.0), 2, 1, N_ITEMS)
    path = tmp_path / "client-state" / "2" / "1.state"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"1\.state is truncated: 'private/u' needs 152 bytes, 147 follow"):
        state_store.restore(cfg, Content(), 2, 1)


def test_a_new_version_is_written_over_an_obsolete_ones_file(tmp_path):
    """Shorter or longer than the file it reuses, each version reads back
    whole, and only the newest two stay."""
    cfg = Config.of(out=str(tmp_path))
    folder = tmp_path / "client-state" / "2"
    inodes = {}
    for server_round, rows in enumerate((50, 3, 80, 1, 20), start=1):
        values = np.full((rows, 3), server_round, np.float32)
        state_store.persist(cfg, Content({"residual": to_record({"r": values})}), 2, server_round, N_ITEMS)
        state_store.settle()
        back = Content()
        state_store.restore(cfg, back, 2, server_round)
        np.testing.assert_array_equal(back["residual"]["r"].numpy(), values)
        assert len(list(folder.iterdir())) == min(server_round, 2)
        inodes[server_round] = (folder / f"{server_round}.state").stat().st_ino
    assert sorted(p.name for p in folder.iterdir()) == ["4.state", "5.state"]
    assert inodes[4] == inodes[2] and inodes[5] == inodes[3]  # round 2's file became round 4's


def test_a_client_state_dir_holds_each_runs_store_in_its_own_folder(tmp_path):
    shared = tmp_path / "ram"
    shared.mkdir()
    first = Config.of(out=str(tmp_path / "a"), client_state_dir=str(shared))
    second = Config.of(out=str(tmp_path / "b"), client_state_dir=str(shared))
    assert state_store.store_of(first).parent == shared
    assert state_store.store_of(first) != state_store.store_of(second)
    assert state_store.store_of(first) == state_store.store_of(Config.of(out=str(tmp_path / "a"),
                                                                          client_state_dir=str(shared)))
    state_store.persist(first, _state(2.0), 3, 1, N_ITEMS)
    state_store.settle()
    assert not (tmp_path / "a" / "client-state").exists()
    state = Content()
    state_store.restore(first, state, 3, 1)
    assert state["private"]["u"].numpy()[0, 0] == 2.0
    other = Content()
    state_store.restore(second, other, 3, 1)
    assert not len(other)  # another run's store is another folder


def test_a_client_state_dir_that_is_not_a_folder_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="client-state-dir"):
        Config.of(client_state_dir=str(tmp_path / "missing"))


def test_auto_keeps_state_in_shared_memory_only_without_checkpoints_and_when_it_fits(tmp_path):
    cfg = Config.of(out=str(tmp_path / "run"), client_state_dir=str(tmp_path))
    mapped = state_store.resolve(cfg, 10, N_ITEMS)
    assert mapped.runtime.client_state_store == "mapped"
    assert (state_store.store_of(mapped) / "owner").exists()  # signed by this driver
    assert state_store.resolve(cfg.replace(checkpoint_every=2), 10, N_ITEMS).runtime.client_state_store == "files"
    assert state_store.resolve(cfg.replace(ray_address="10.0.0.1:6379"), 10, N_ITEMS) \
        .runtime.client_state_store == "files"  # clients on other machines would not see it
    huge = cfg.replace(prune_method="topk-global", error_feedback=True, dim=4096)
    assert state_store.resolve(huge, 10**7, 10**5).runtime.client_state_store == "files"
    assert state_store.resolve(cfg.replace(client_state_store="files"), 10, N_ITEMS) \
        .runtime.client_state_store == "files"


def test_a_mapped_store_is_refused_with_checkpoints_before_any_work():
    with pytest.raises(ConfigError, match="client-state-store"):
        Config.of(client_state_store="mapped", checkpoint_every=5)


def test_a_mapped_state_comes_back_as_it_was_saved(tmp_path):
    cfg = Config.of(out=str(tmp_path / "run"), client_state_dir=str(tmp_path), client_state_store="mapped")
    for server_round in (1, 2, 3):
        state_store.persist(cfg, _state(float(server_round)), 4, server_round, N_ITEMS)
    back = Content()
    state_store.restore(cfg, back, 4, 2)  # a retried round 3 starts from round 2's state
    assert np.array_equal(back["private"]["u"].numpy(), np.full((2, 3), 2.0, np.float32))
    state_store.restore(cfg, latest := Content(), 4, 3)
    assert np.array_equal(latest["private"]["u"].numpy(), np.full((2, 3), 3.0, np.float32))
    state_store.restore(cfg, none := Content(), 5, 3)
    assert not len(none)


@pytest.mark.parametrize("kind", ["files", "mapped"])
def test_a_restore_of_some_records_reads_only_those(tmp_path, kind):
    """An evaluation reads the user vectors, not the residual beside them."""
    cfg = Config.of(out=str(tmp_path / "run"), client_state_dir=str(tmp_path), client_state_store=kind)
    state = _state(7.0)
    state["residual"] = to_record({"r": np.arange(1000, dtype=np.float32), "s": np.array([5], np.int64)})
    state["later"] = to_record({"x": np.ones(3, np.float32)})
    state_store.persist(cfg, state, 2, 1, N_ITEMS)
    state_store.restore(cfg, back := Content(), 2, 1, only=("private", "later"))
    assert list(back) == ["private", "later"]
    assert np.array_equal(back["private"]["u"].numpy(), np.full((2, 3), 7.0, np.float32))
    assert np.array_equal(back["later"]["x"].numpy(), np.ones(3, np.float32))
    state_store.restore(cfg, whole := Content(), 2, 1)
    assert list(whole) == ["private", "residual", "later"]
