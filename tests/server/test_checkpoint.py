"""Checkpoints: what is saved is what is loaded; a resume under another config
is refused naming the key; a write in progress never replaces the last checkpoint."""

import numpy as np
import pytest

from prunus.common.config import Config, ConfigError
from prunus.server import checkpoint as ckpt
from prunus.server.ledger import Ledger, ReplyLog


def _checkpoint(cfg: Config) -> ckpt.Checkpoint:
    ledger = Ledger()
    ledger.round(0).metrics["hr@10"] = 0.1
    ledger.round(1).uplink_bytes = 123  # train_loss stays NaN
    ledger.replies.append(ReplyLog(1, "train", 3, 7, "h", "", "accepted", 123, 4))
    params = {"item_embedding.weight": np.arange(6, dtype=np.float32).reshape(3, 2)}
    return ckpt.Checkpoint(1, params, ({"item_embedding.weight": np.ones((3, 2))}, {}),
                           {"pulls": np.array([1.0, 0.0])}, ledger, cfg.to_dict())  # fmt: skip


def test_a_checkpoint_loads_as_it_was_saved(tmp_path):
    cfg = Config.of(rounds=3)
    ckpt.save(tmp_path, _checkpoint(cfg))
    got = ckpt.load(tmp_path)
    assert got.server_round == 1 and got.config == cfg.to_dict()
    np.testing.assert_array_equal(got.params["item_embedding.weight"], np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(got.optimizer[0]["item_embedding.weight"], np.ones((3, 2)))
    np.testing.assert_array_equal(got.selection["pulls"], [1.0, 0.0])
    assert got.ledger.rows()[1]["uplink_bytes"] == 123 and np.isnan(got.ledger.rows()[1]["train_loss"])
    assert got.ledger.rows()[0]["hr@10"] == 0.1 and got.ledger.reply_rows()[0]["uplink_bytes"] == 123
    assert not list(tmp_path.glob(".*partial"))


def test_a_resume_under_another_config_names_the_key(tmp_path):
    saved = _checkpoint(Config.of(rounds=3, density=0.1))
    ckpt.check_resumable(Config.of(rounds=3, density=0.1, engine="inprocess", out="elsewhere"), saved)  # how it runs
    with pytest.raises(ConfigError, match="density = 0.1"):
        ckpt.check_resumable(Config.of(rounds=3, density=0.2), saved)


def test_a_write_that_fails_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    ckpt.save(tmp_path, _checkpoint(Config.of(rounds=3)))
    before = (tmp_path / ckpt.CHECKPOINT).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        ckpt.save(tmp_path, _checkpoint(Config.of(rounds=5)))
    assert (tmp_path / ckpt.CHECKPOINT).read_bytes() == before and not list(tmp_path.glob(".*partial"))


def test_under_flwr_run_resume_reads_the_checkpoint_and_a_fresh_run_clears_the_folder(tmp_path):
    from prunus.server.run import deployment_checkpoint

    cfg = Config.of(rounds=3, out=str(tmp_path))
    ckpt.save(tmp_path, _checkpoint(cfg))
    (tmp_path / "summary.json").write_text("{}")
    got = deployment_checkpoint(cfg.replace(resume=True))
    assert got is not None and got.server_round == 1 and (tmp_path / "summary.json").exists()
    with pytest.raises(ConfigError, match="rounds = 3"):
        deployment_checkpoint(cfg.replace(resume=True, rounds=4))
    assert deployment_checkpoint(cfg) is None
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / ckpt.CHECKPOINT).exists()
