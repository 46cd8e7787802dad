"""Checkpoints: what is saved is what is loaded; a resume under another config
is refused naming the key; a write in progress never replaces the last checkpoint."""

import numpy as np
import pytest

from prunus.common.config import Config, ConfigError
from prunus.common.datasets import load_split
from prunus.common.models import model_spec
from prunus.server import checkpoint as ckpt
from prunus.server.ledger import Ledger, ReplyLog


def _checkpoint(cfg: Config) -> ckpt.Checkpoint:
    ledger = Ledger()
    ledger.round(0).metrics["hr@10"] = 0.1
    ledger.round(1).uplink_bytes = 123  # train_loss stays NaN
    ledger.replies.append(ReplyLog(1, "train", 3, 7, "h", "", "accepted", 123, 4))
    shapes = model_spec(cfg.model, load_split(cfg).n_items).shapes
    params = {name: np.arange(np.prod(shape), dtype=np.float32).reshape(shape) for name, shape in shapes.items()}
    return ckpt.Checkpoint(1, params, ({"item_embedding.weight": np.ones(shapes["item_embedding.weight"])}, {}),
                           {"pulls": np.array([1.0, 0.0])}, ledger, cfg.to_dict())  # fmt: skip


def test_a_checkpoint_loads_as_it_was_saved(tmp_path):
    cfg = Config.of(rounds=3)
    ckpt.save(tmp_path, _checkpoint(cfg))
    got = ckpt.load(tmp_path)
    assert got.server_round == 1 and got.config == cfg.to_dict()
    np.testing.assert_array_equal(got.params["item_embedding.weight"], _checkpoint(cfg).params["item_embedding.weight"])
    np.testing.assert_array_equal(got.optimizer[0]["item_embedding.weight"], 1.0)
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


def _members(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _rewrite(path, members: dict, sign: bool = True, compress: bool = False) -> None:
    """Write `members` as the checkpoint, with a digest that matches (`sign`:
    an operator who edits and re-signs) or the old one."""
    members = dict(members)
    if sign:
        from prunus.common.params import npy_array

        members[ckpt.DIGEST] = np.frombuffer(ckpt._digest({k: npy_array(v).data for k, v in members.items()}), np.uint8)
    with open(path, "wb") as handle:
        (np.savez_compressed if compress else np.savez)(handle, **members)


def _meta_with(members, **changes):
    import json

    meta = json.loads(bytes(members["meta"]).decode())
    for key, value in changes.items():
        target = meta["config"] if key == "config" else meta
        if key == "config":
            target.update(value)
        else:
            target[key] = value
    return {**members, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}


TAMPERED = {
    "truncated": lambda m, p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "one byte flipped": lambda m, p: p.write_bytes((lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:])(p.read_bytes())),
    "empty": lambda m, p: p.write_bytes(b""),
    "not a zip": lambda m, p: p.write_bytes(b"\x93NUMPY" + bytes(100)),
    "edited, not re-signed": lambda m, p: _rewrite(p, {**m, "params/item_bias.weight": m["params/item_bias.weight"] + 1}, sign=False),
    "parameters as int32": lambda m, p: _rewrite(p, {**m, "params/item_bias.weight": m["params/item_bias.weight"].astype(np.int32)}),
    "a parameter of another shape": lambda m, p: _rewrite(p, {**m, "params/item_bias.weight": np.zeros((3, 1), np.float32)}),
    "a parameter missing": lambda m, p: _rewrite(p, {k: v for k, v in m.items() if k != "params/item_bias.weight"}),
    "an infinite parameter": lambda m, p: _rewrite(p, {**m, "params/item_bias.weight": np.full_like(m["params/item_bias.weight"], np.inf)}),
    "a NaN parameter": lambda m, p: _rewrite(p, {**m, "params/item_embedding.weight": np.where(np.eye(*m["params/item_embedding.weight"].shape, dtype=bool), np.nan, m["params/item_embedding.weight"]).astype(np.float32)}),
    "round 0": lambda m, p: _rewrite(p, _meta_with(m, round=0)),
    "round 1e9": lambda m, p: _rewrite(p, _meta_with(m, round=10**9)),
    "round as text": lambda m, p: _rewrite(p, _meta_with(m, round="1")),
    "config edited": lambda m, p: _rewrite(p, _meta_with(m, config={"density": 0.5})),
    "metadata not json": lambda m, p: _rewrite(p, {**m, "meta": np.frombuffer(b"{not json", np.uint8)}),
    "metadata missing": lambda m, p: _rewrite(p, {k: v for k, v in m.items() if k != "meta"}),
    "a ledger entry with a foreign field": lambda m, p: _rewrite(p, _meta_with(m, rounds=[{"round": 1, "evil": 1}])),
    "a compressed member (a bomb's way in)": lambda m, p: _rewrite(p, {**m, "pad": np.zeros(10**6, np.uint8)}, compress=True),
    "negative second moments": lambda m, p: _rewrite(p, {**m, "optimizer-v/item_bias.weight": -np.ones_like(m["params/item_bias.weight"])}),
}


@pytest.mark.parametrize("damage", TAMPERED)
def test_a_damaged_or_edited_checkpoint_is_refused_naming_what_is_wrong(tmp_path, damage):
    cfg = Config.of(rounds=3, density=0.1, out=str(tmp_path))
    ckpt.save(tmp_path, _checkpoint(cfg))
    path = tmp_path / ckpt.CHECKPOINT
    TAMPERED[damage](_members(path), path)
    with pytest.raises(ConfigError, match="--resume") as refused:
        ckpt.check_resumable(cfg, ckpt.load(tmp_path))
    assert "\n" not in str(refused.value)


def test_a_refused_checkpoint_is_one_line_and_exit_2_on_the_command_line(tmp_path):
    import subprocess
    import sys

    cfg = Config.of(rounds=3, out=str(tmp_path))
    ckpt.save(tmp_path, _checkpoint(cfg))
    path = tmp_path / ckpt.CHECKPOINT
    path.write_bytes(path.read_bytes()[:-10])
    done = subprocess.run([sys.executable, "-m", "prunus.simulations.cli", "simulate", "--resume", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "not a checkpoint prunus can trust" in done.stderr


def test_a_ledger_line_written_before_a_field_existed_loads_with_its_default():
    """A checkpoint's reply lines from before clients.csv said what the defences
    did load with those fields empty; an unknown or missing required field does not."""
    line = {"round": 1, "kind": "train", "partition": 3, "node": 13, "host": "h", "ray_node": "", "status": "accepted",
            "uplink_bytes": 10, "uplink_nnz": 2}
    (old,) = ckpt._records({"replies": [line]}, "replies", ReplyLog)
    assert (old.defence, old.reason) == ("", "")
    for bad in ({**line, "extra": 1}, {k: v for k, v in line.items() if k != "status"}):
        with pytest.raises(ValueError, match="exactly the fields"):
            ckpt._records({"replies": [bad]}, "replies", ReplyLog)
