import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from prunus.common.config import (
    SECTIONS,
    CompressionConfig,
    Config,
    ConfigError,
    all_sections,
    from_mapping,
    from_run_config,
    key_of,
    keys,
    load,
    method_sections,
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
    for section, cls in all_sections().items():
        for f in dataclasses.fields(cls):
            owners.setdefault(key_of(f.name), []).append(section)
    assert {key: len(sections) for key, sections in owners.items() if len(sections) != 1} == {}
    assert set(owners) == set(keys()) and len(keys()) == len(set(keys()))
    assert all(section_of(key) == owners[key][0] for key in keys())
    # the Config is its shared sections and the methods' own, and nothing else
    assert [f.name for f in dataclasses.fields(Config)] == [*SECTIONS, "methods"]
    assert all(isinstance(Config().section(s), cls) for s, cls in all_sections().items())


def test_to_dict_is_flat_and_round_trips():
    cfg = Config.of(rounds=3, local_lr=2.5, prune_method="topk", density=0.05, value_codec="int8",
                    downlink_codec="fp16", model="neumf", dim=8, engine="inprocess", seed=7, top_k=5)
    flat = cfg.to_dict()
    assert list(flat) == list(keys())
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
        assert getattr(cfg.section(section_of(key)), key.replace("-", "_")) == value


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


# ------------------------------------------------------- methods' sections
# every section a method declares beside its code (its class's `Options`)
METHOD_SECTIONS = method_sections()


def test_the_methods_declare_their_own_keys_and_the_shared_section_holds_none_of_them():
    assert {name: [key_of(f.name) for f in dataclasses.fields(cls)] for name, cls in METHOD_SECTIONS.items()} == {
        "prune-method.lowrank": ["rank", "rank-basis", "rank-explore"],
        "prune-method.threshold": ["prune-threshold"],
        "broadcast-rows.bandit": ["bandit-items"],
        "broadcast-rows.requested": ["negative-pool", "negative-pool-min", "request-pad"],
        "defence.fill": ["fill-rate", "fill-choice", "fill-spread", "fill-repay"],
        "defence.ldp": ["ldp-clip", "ldp-epsilon", "ldp-delta"],
    }
    shared = {key_of(f.name) for f in dataclasses.fields(CompressionConfig)}
    assert not shared & {key for key in keys() if "." in section_of(key)}
    # a method's keys follow the shared compression keys in the flat order (how
    # summary.json lists them and labels read), before the federation's
    flat = list(keys())
    assert flat.index("model-prune-end") < flat.index("rank") < flat.index("ldp-delta") < flat.index("rounds")


# what a section's other values need of the shared sections: fill-repay a pruned update
_NEEDS: dict[str, dict[str, object]] = {"defence.fill": {"prune-method": "topk"}}


def _selected(section: str) -> dict[str, object]:
    """The keys that pick the section's method, and what its other values need."""
    kind, _, name = section.partition(".")
    return {kind: name, **_NEEDS.get(section, {})}


def _other_value(f: dataclasses.Field) -> object:
    """A valid value of a field other than its default."""
    if "choices" in f.metadata:
        return next(c for c in f.metadata["choices"] if c != f.default)
    return {"bool": not f.default, "int": f.default + 1, "float": f.default * 2 or 0.5}[str(f.type)]


@pytest.mark.parametrize("section", METHOD_SECTIONS)
def test_a_method_section_defaults_and_parses_from_a_file_and_set(section, tmp_path: Path):
    cls = METHOD_SECTIONS[section]
    assert Config().section(section) == cls() and Config().methods[section] == cls()
    assert all(section_of(key_of(f.name)) == section for f in dataclasses.fields(cls))
    values = {key_of(f.name): _other_value(f) for f in dataclasses.fields(cls)}
    path = tmp_path / "run.toml"
    path.write_text("".join(f"{k} = {v!r}\n".replace("'", '"').replace("True", "true").replace("False", "false")
                            for k, v in (_selected(section) | values).items()))
    from_file = load(path)
    from_set = load(None, [f"{k}={v}" for k, v in (_selected(section) | values).items()])
    assert from_file == from_set
    assert {key_of(f.name): getattr(from_file.section(section), f.name) for f in dataclasses.fields(cls)} == values
    assert from_file.methods == Config().methods.replace(section, **{k.replace("-", "_"): v for k, v in values.items()})
    flat = from_file.to_dict()
    assert from_mapping(flat) == from_file and {k: flat[k] for k in values} == values
    # the other methods' sections keep their defaults
    assert all(from_file.section(s) == c() for s, c in METHOD_SECTIONS.items() if s != section)


@pytest.mark.parametrize("section", METHOD_SECTIONS)
def test_a_bad_value_of_a_method_key_names_the_key_and_the_method(section):
    kind, _, name = section.partition(".")
    owner = re.escape(f'(a setting of {kind} = "{name}")')
    for f in dataclasses.fields(METHOD_SECTIONS[section]):
        key = key_of(f.name)
        if "min" in f.metadata or "choices" in f.metadata:
            bad = "nonsense" if "choices" in f.metadata else "-1"
            with pytest.raises(ConfigError, match=rf"^{key}: .*{owner}$"):
                load(None, [f"{key}={bad}"])
        if str(f.type) != "str":
            with pytest.raises(ConfigError, match=rf"^{key}: expected {f.type}, got 'many' {owner}$"):
                load(None, [f"{key}=many"])


def test_a_method_key_is_accepted_while_another_method_is_picked():
    """As when every key sat in one section: the value is kept (and recorded in
    summary.json) but nothing reads it; fill-repay alone asks for its method."""
    cfg = load(None, ["prune-method=topk", "rank=8", "bandit-items=0.5", "ldp-epsilon=2", "fill-rate=3"])
    assert cfg.methods["prune-method.lowrank"].rank == 8 and cfg.to_dict()["rank"] == 8
    assert (cfg.compression.defence, cfg.compression.broadcast_rows) == ("none", "all")
    with pytest.raises(ConfigError, match='fill-repay: needs defence = "fill"'):
        load(None, ["prune-method=topk", "defence=ldp", "fill-repay=true"])


def test_a_method_section_checks_its_own_values_together():
    with pytest.raises(ConfigError, match=r'fill-spread: must be in \[0, 1\], got 1.5 \(a setting of defence = "fill"\)'):
        Config.of(fill_spread=1.5)
    assert Config.of(fill_spread=1.0).methods["defence.fill"].fill_spread == 1.0


def test_a_config_with_the_methods_sections_pickles_and_hashes():
    """(Ray ships configs between processes; sweeps key points by config.)"""
    cfg = Config.of(rank=3, defence="fill", fill_rate=2.0)
    assert pickle.loads(pickle.dumps(cfg)) == cfg and hash(cfg) == hash(Config.of(rank=3, defence="fill", fill_rate=2))


def test_the_architecture_page_lists_each_method_section_and_its_keys():
    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    listed = dict(re.findall(r"^\| `([a-z-]+\.[a-z-]+)` \| (.+) \|$", page, re.MULTILINE))
    assert {name: re.findall(r"`([a-z-]+)`", keys_) for name, keys_ in listed.items()} == {
        name: [key_of(f.name) for f in dataclasses.fields(cls)] for name, cls in METHOD_SECTIONS.items()}
