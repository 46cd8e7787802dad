import dataclasses
from pathlib import Path

import pytest

from prunus.common.config import (
    KEYS,
    SECTIONS,
    CompressionConfig,
    Config,
    ConfigError,
    from_mapping,
    from_run_config,
    key_of,
    load,
    parse_value,
    section_of,
)


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
        (["defence=fill", "fill-repay=true"], "fill-repay"),  # dense: no residual to repay from
        (["defence=fill", "fill-repay=true", "prune-method=topk", "error-feedback=false"], "fill-repay"),
        (["client-batch=0"], "client-batch"),
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


# ---------------------------------------------------------------- sections
def test_every_flat_key_belongs_to_exactly_one_section():
    owners: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(key_of(f.name), []).append(section)
    assert {key: len(sections) for key, sections in owners.items() if len(sections) != 1} == {}
    assert set(owners) == set(KEYS) and len(KEYS) == len(set(KEYS))
    assert all(section_of(key) == owners[key][0] for key in KEYS)
    # the Config is its sections, and nothing else
    assert [f.name for f in dataclasses.fields(Config)] == list(SECTIONS)
    assert all(isinstance(getattr(Config(), s), cls) for s, cls in SECTIONS.items())


def test_to_dict_is_flat_and_round_trips():
    cfg = Config.of(rounds=3, local_lr=2.5, prune_method="topk", density=0.05, value_codec="int8",
                    downlink_codec="fp16", model="neumf", dim=8, engine="inprocess", seed=7, top_k=5)
    flat = cfg.to_dict()
    assert list(flat) == list(KEYS)
    assert not any(isinstance(v, dict) for v in flat.values())
    assert from_mapping(flat) == cfg and from_run_config(flat) == cfg
    assert Config.of(**{key.replace("-", "_"): value for key, value in flat.items()}) == cfg
    assert Config().to_dict() != flat


def test_sections_hold_their_keys():
    cfg = Config.of(rounds=3, local_lr=2.5, prune_method="topk", dim=8, engine="inprocess",
                    dataset="synthetic", top_k=5, centralized_lr=0.01)
    assert cfg.federation.rounds == 3
    assert cfg.training.local_lr == 2.5
    assert cfg.compression.prune_method == "topk"
    assert cfg.model.dim == 8
    assert cfg.runtime.engine == "inprocess"
    assert cfg.data.dataset == "synthetic"
    assert cfg.evaluation.top_k == 5
    assert cfg.centralized.centralized_lr == 0.01
    for key, value in cfg.to_dict().items():  # every key lives where section_of says
        assert getattr(getattr(cfg, section_of(key)), key.replace("-", "_")) == value


def test_replace_changes_only_the_named_keys():
    cfg = Config.of(rounds=3)
    other = cfg.replace(local_lr=1, dim=16)
    assert (other.training.local_lr, other.model.dim, other.federation.rounds) == (1.0, 16, 3)
    assert isinstance(other.training.local_lr, float)  # an int for a float key is converted
    assert other.compression == cfg.compression and other.data == cfg.data
    assert cfg.model.dim == 128  # the original is unchanged (frozen)
    with pytest.raises(ConfigError, match="unknown config key 'learning-rate'"):
        cfg.replace(learning_rate=0.1)


def test_a_section_validates_its_own_values_naming_the_key():
    with pytest.raises(ConfigError, match="density"):
        CompressionConfig(density=-1.0)
    with pytest.raises(ConfigError, match="engine"):
        Config.of(engine="threads")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().training.local_lr = 1.0  # type: ignore[misc]
