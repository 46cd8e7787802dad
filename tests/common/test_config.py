from pathlib import Path

import pytest

from prunus.common.config import Config, ConfigError, from_run_config, load, parse_value


def test_defaults_are_valid_and_round_trip_through_run_config():
    cfg = Config()
    assert from_run_config(cfg.to_dict()) == cfg


def test_toml_file_and_overrides_apply_in_order(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text('rounds = 7\nlocal-lr = 1\nrow-averaging = false\n')
    cfg = load(path, ["rounds=9", "dim=8"])
    assert (cfg.federation.rounds, cfg.training.local_lr, cfg.federation.row_averaging, cfg.model.dim) == (9, 1.0, False, 8)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["rouns=3"], "rouns"),
        (["rounds=three"], "rounds"),
        (["rounds=0"], "rounds"),
        (["dataset=movies"], "dataset"),
        (["local-lr=-1"], "local-lr"),
        (["row-averaging=maybe"], "row-averaging"),
        (["mlp-layers=64,x"], "mlp-layers"),
        (["dataset=ml-1m"], "data-dir"),
        (["dataset=ml-1m", "data-dir=/nonexistent/prunus"], "data-dir"),
        (["rounds"], "key=value"),
    ],
)
def test_bad_keys_and_values_fail_naming_the_key(overrides, named):
    with pytest.raises(ConfigError, match=named):
        load(None, overrides)


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("learning-rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"learning-rate.*bad\.toml"):
        load(path)


def test_wrong_type_in_file_fails(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('rounds = "many"\n')
    with pytest.raises(ConfigError, match="rounds"):
        load(path)


def test_parse_value_uses_declared_type():
    assert parse_value("rounds", "12") == 12
    assert parse_value("server-lr", "2") == 2.0
    assert parse_value("full-ranking", "true") is True


def test_local_lr_schedule_is_cosine_from_start_to_final():
    cfg = Config.of(rounds=11, local_lr=5.0, local_lr_final=1.0)
    assert cfg.local_lr_at(1) == 5.0
    assert abs(cfg.local_lr_at(6) - 3.0) < 1e-12
    assert abs(cfg.local_lr_at(11) - 1.0) < 1e-12
    assert Config.of(rounds=11, local_lr=5.0, local_lr_final=0.0).local_lr_at(7) == 5.0


def test_a_file_can_start_from_a_base_file(tmp_path: Path):
    (tmp_path / "base.toml").write_text("rounds = 7\ndim = 8\n")
    (tmp_path / "child.toml").write_text('base = "base.toml"\ndim = 16\n')
    cfg = load(tmp_path / "child.toml")
    assert (cfg.federation.rounds, cfg.model.dim) == (7, 16)
    (tmp_path / "loop.toml").write_text('base = "loop.toml"\n')
    with pytest.raises(ConfigError, match="loops"):
        load(tmp_path / "loop.toml")


def test_committed_experiment_configs_are_valid(monkeypatch):
    """Every committed config loads (data paths resolve from the project root,
    where ../shared/datasets lives on the machines that run them)."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    shared = root.parent / "shared" / "datasets"
    for path in sorted((root / "simulations" / "configs").glob("*.toml")):
        if "ml1m" in path.name and not shared.exists():
            continue
        assert load(path).federation.rounds > 0
