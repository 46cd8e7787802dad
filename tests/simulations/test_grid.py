"""Grid files: expansion, deduplication, and bad grids failing before any run."""

from pathlib import Path

import pytest

from prunus.common.config import ConfigError, load
from prunus.simulations.cli import main
from prunus.simulations.grid import load_grid
from prunus.simulations.sweep import _toml

GRID = """
seeds = [0, 1]
baseline = {prune-method = "none"}

[set]
rounds = 4
dim = 8

[[grids]]
prune-method = "none"

[[grids]]
prune-method = ["topk-global"]
density = [0.1, 0.01]
error-feedback = [true, false]

[[grids]]
prune-method = ["randomk", "rows"]
density = [0.01]

[[grids]]   # the same as a point of block 2: run once
prune-method = ["topk-global"]
density = [0.01]
error-feedback = [true]
"""


def _grid(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_blocks_are_united_and_deduplicated_seed_major(tmp_path: Path):
    points = load_grid(_grid(tmp_path, GRID))
    assert len(points) == (1 + 4 + 2) * 2
    first_seed = points[:7]
    assert [p.seed for p in first_seed] == [0] * 7 and [p.seed for p in points[7:]] == [1] * 7
    assert [p.setting for p in first_seed] == list(range(7))
    assert first_seed[0].name == "prune-method=none_seed=0"
    assert first_seed[1].name == "prune-method=topk-global_density=0.1_error-feedback=true_seed=0"
    assert first_seed[6].name == "prune-method=rows_density=0.01_seed=0"
    assert len({p.name for p in points}) == len(points)
    assert all(p.config.federation.rounds == 4 and p.config.model.dim == 8 for p in points)
    assert [p.baseline for p in points].count(True) == 2  # the dense setting, once per seed
    assert points[1].config.compression.error_feedback and not points[2].config.compression.error_feedback


def test_a_value_equal_to_the_base_is_the_same_point(tmp_path: Path):
    points = load_grid(_grid(tmp_path, '[[grids]]\nprune-method = ["none"]\n[[grids]]\nvalue-codec = ["fp32", "fp16"]\n'))
    assert [p.name for p in points] == ["prune-method=none_seed=0", "value-codec=fp16_seed=0"]


def test_base_is_relative_to_the_grid_file(tmp_path: Path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "small.toml").write_text("dim = 4\nseed = 7\n")
    (tmp_path / "experiments").mkdir()
    points = load_grid(_grid(tmp_path / "experiments", 'base = "../configs/small.toml"\n[[grids]]\ndensity = [0.5]\n'))
    assert [(p.config.model.dim, p.seed) for p in points] == [(4, 7)]  # no seeds: the base's seed


def test_config_hash_ignores_where_the_run_goes(tmp_path: Path):
    point = load_grid(_grid(tmp_path, "[set]\ndim = 4\n"))[0]
    assert point.config_hash == load_grid(_grid(tmp_path, "[set]\ndim = 4\n"))[0].config_hash
    moved = point.config.replace(out="elsewhere", ray_address="auto")
    assert type(point)(**{**point.__dict__, "config": moved}).config_hash == point.config_hash
    assert load_grid(_grid(tmp_path, "[set]\ndim = 5\n"))[0].config_hash != point.config_hash


def test_written_config_reads_back_as_the_same_config(tmp_path: Path):
    """What a point's subprocess runs (its config.toml) is the point's config."""
    for point in load_grid(_grid(tmp_path, GRID + '\n[[grids]]\nprune-method = ["topk"]\nmlp-layers = ["8,4"]\nl2 = [1e-05]\n')):
        path = tmp_path / "config.toml"
        path.write_text(_toml(point.config.to_dict()))
        assert load(path) == point.config


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[grids]]\ndensty = [0.1]\n', "densty"),  # unknown key
        ('[[grids]]\ndensity = []\n', "density"),  # empty axis
        ('[[grids]]\ndensity = ["a lot"]\n', "density"),  # wrong type
        ('[[grids]]\nerror-feedback = [1]\n', "error-feedback"),  # int for a bool
        ('[[grids]]\ndensity = [0.1, 2.0]\n', "density"),  # out of range, in the last value
        ('[set]\nvalue-codec = "fp8"\n', "value-codec"),
        ('[sett]\ndim = 4\n', "sett"),  # unknown top-level table
        ('base = "missing.toml"\n', "missing.toml"),
        ('seeds = []\n', "seeds"),
        ('seeds = [0, "1"]\n', "seeds"),
        ('[set]\nseed = 3\n', "seed"),
        ('[[grids]]\nout = ["x"]\n', "out"),
        ('baseline = {prune-method = "none"}\n[[grids]]\nprune-method = ["topk"]\n', "baseline"),
        ('baseline = {prune-method = "none"}\n[[grids]]\ndownlink-codec = ["fp32", "fp16"]\n', "baseline"),
        ('baseline = {prune-methd = "none"}\n', "prune-methd"),
        ('grids = 3\n', "grids"),
    ],
)
def test_bad_grid_fails_naming_the_key_and_the_file(tmp_path: Path, text: str, named: str):
    path = _grid(tmp_path, text, "bad-grid.toml")
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert named in str(err.value) and "bad-grid.toml" in str(err.value)


def test_bad_grid_in_the_last_block_fails_before_any_run(tmp_path: Path, capsys):
    path = _grid(tmp_path, GRID + '\n[[grids]]\nprune-method = ["topk"]\nlocal-lr = ["fast"]\n', "bad-grid.toml")
    out = tmp_path / "sweep"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "local-lr" in err and "bad-grid.toml" in err
    assert not out.exists()


def _experiment(name: str, monkeypatch) -> list:
    """The points of a committed ML-100K experiment (its data must be there: the grid loads it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root.parent / "shared" / "datasets" / "ml-100k" / "u.data").exists():
        pytest.skip("ML-100K is not at ../shared/datasets/ml-100k")
    monkeypatch.chdir(root)  # data-dir is relative to where prunus runs
    return load_grid(f"simulations/experiments/{name}.toml")


def test_the_ml100k_frontier_experiment_is_a_valid_grid(monkeypatch):
    points = _experiment("ml100k-frontier", monkeypatch)
    configs = [p.config for p in points if p.seed == 0]
    assert {p.seed for p in points} == {0, 1} and len(points) == 2 * len(configs)
    assert {c.data.dataset for c in configs} == {"ml-100k"} and [p.baseline for p in points].count(True) == 2
    topk = {(c.compression.density, c.compression.error_feedback) for c in configs if c.compression.prune_method == "topk-global" and c.compression.value_codec == "fp32"}
    assert topk == {(d, ef) for d in (0.1, 0.03, 0.01, 0.003, 0.001) for ef in (True, False)}
    assert {"randomk", "rows", "none"} <= {c.compression.prune_method for c in configs}
    assert {"fp16", "int8", "ternary"} <= {c.compression.value_codec for c in configs}
    assert {"fp32", "fp16"} == {c.compression.downlink_codec for c in configs}


def test_the_ml100k_downlink_experiment_is_a_valid_grid(monkeypatch):
    points = _experiment("ml100k-downlink", monkeypatch)
    configs = [p.config for p in points if p.seed == 0]
    assert len(points) == 2 * len(configs) == 20 and [p.baseline for p in points].count(True) == 2
    pruned = [c for c in configs if c.compression.prune_method == "topk-global"]
    assert {(c.compression.density, c.compression.value_codec) for c in pruned} == {(0.01, "int8")}
    assert {(c.compression.downlink_codec, c.compression.model_sparsity) for c in pruned} == {
        (codec, sparsity) for codec in ("fp32", "fp16", "int8") for sparsity in (0.0, 0.5, 0.8)
    }
