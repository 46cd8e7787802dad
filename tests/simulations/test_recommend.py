"""`prunus evaluate` and `prunus recommend` on a real (small, in-process) run:
the saved model re-scores to the run's final figures exactly, recommendations
leave out what the user gave, and every unusable input fails with exit code 2."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from prunus.common.config import Config, from_mapping
from prunus.common.data import DatasetError, load_ml100k, load_ncf_item_map, load_raw_ids, load_titles
from prunus.common.datasets import item_titles, load_split, raw_ids
from prunus.simulations.cli import main
from prunus.simulations.recommend import evaluate_run, open_run

SMALL = ["engine=inprocess", "synthetic-users=40", "synthetic-items=60", "eval-negatives=20", "dim=8",
         "rounds=3", "clients-per-round=12", "eval-every=2",
         "model-sparsity=0.5", "model-prune-start=1", "model-prune-end=3"]  # fmt: skip
ROW = re.compile(r"^\s*(\d+)\s+(-?\d+\.\d+|-?inf)\s+(\S+)")  # rank, score, item id


def _simulate(out: Path, settings: list[str]) -> Path:
    assert main(["simulate", *(arg for s in settings for arg in ("--set", s)), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished federated run on synthetic data, its global model pruned to 50%."""
    return _simulate(tmp_path_factory.mktemp("recommend") / "run", SMALL)


def _top(stdout: str) -> list[str]:
    """Item ids of the recommendation table, in rank order."""
    table = stdout.split("title\n", 1)[-1] if "title\n" in stdout else stdout.split("item\n", 1)[-1]
    return [m.group(3) for line in table.splitlines() if (m := ROW.match(line))]


# --- evaluate -------------------------------------------------------------------


def test_evaluate_reproduces_the_final_metrics_bit_for_bit(run_dir: Path, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"]["sparsity"] > 0.4  # the saved model is the pruned one
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for key in ("hr@10", "ndcg@10"):
        assert re.search(rf"^{re.escape(key)}\s+\S+\s+= summary.json$", out, re.M), out
    run = open_run(run_dir)
    first, second = evaluate_run(run), evaluate_run(run)
    assert first == second  # central evaluation is seeded: deterministic
    assert (first["hr@10"], first["ndcg@10"]) == (summary["metrics"]["hr@10"], summary["metrics"]["ndcg@10"])


# --- recommend ------------------------------------------------------------------


def test_recommend_from_items_gives_n_other_items(run_dir: Path, capsys):
    capsys.readouterr()
    assert main(["recommend", str(run_dir), "--items", "3,7, 11", "-n", "6"]) == 0
    top = _top(capsys.readouterr().out)
    assert len(top) == 6 and len(set(top)) == 6
    assert not {"3", "7", "11"} & set(top)
    assert main(["recommend", str(run_dir), "--items", "11,3,7", "-n", "6"]) == 0
    assert _top(capsys.readouterr().out) == top  # seeded fold-in: same answer, whatever the order


def test_recommend_for_a_user_leaves_out_that_users_training_items(run_dir: Path, capsys):
    split = load_split(from_mapping(json.loads((run_dir / "summary.json").read_text())["config"]))
    user = int(np.argmax(np.diff(split.indptr)))  # the user with the most training items
    capsys.readouterr()
    assert main(["recommend", str(run_dir), "--user", str(user)]) == 0
    out = capsys.readouterr().out
    top = [int(i) for i in _top(out)]
    assert len(top) == 10 and not set(top) & set(split.user_items(user).tolist())
    assert f"user {user}'s {len(split.user_items(user))} training items" in out


def test_n_larger_than_the_catalogue_lists_every_other_item(run_dir: Path, capsys):
    capsys.readouterr()
    assert main(["recommend", str(run_dir), "--items", "0,1", "-n", "1000"]) == 0
    assert sorted(int(i) for i in _top(capsys.readouterr().out)) == list(range(2, 60))


# --- errors ---------------------------------------------------------------------


def _error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunus: error: ")
    return err


def test_unknown_item_id_is_named(run_dir: Path, capsys):
    err = _error(["recommend", str(run_dir), "--items", "3,60,x7"], capsys)
    assert "60, x7" in err and "3," not in err


def test_items_and_user_both_or_neither(run_dir: Path, capsys):
    assert "--items" in _error(["recommend", str(run_dir), "--items", "3", "--user", "1"], capsys)
    assert "--user" in _error(["recommend", str(run_dir)], capsys)
    assert "unknown user id 40" in _error(["recommend", str(run_dir), "--user", "40"], capsys)


def test_run_folder_without_model_or_summary(run_dir: Path, tmp_path: Path, capsys):
    shutil.copy(run_dir / "summary.json", tmp_path / "summary.json")
    assert "no model.npz" in _error(["evaluate", str(tmp_path)], capsys)
    (tmp_path / "summary.json").unlink()
    shutil.copy(run_dir / "model.npz", tmp_path / "model.npz")
    assert "no summary.json" in _error(["recommend", str(tmp_path), "--items", "1"], capsys)
    assert "no such run folder" in _error(["evaluate", str(tmp_path / "nothing")], capsys)


def test_model_that_does_not_match_the_data(run_dir: Path, tmp_path: Path, capsys):
    shutil.copy(run_dir / "model.npz", tmp_path / "model.npz")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"]["synthetic-items"] = 50  # the data now gives 50 items, the model has 60
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    err = _error(["evaluate", str(tmp_path)], capsys)
    assert "does not match" in err and "(60, 8)" in err and "(50, 8)" in err
    summary["config"]["lerning-rate"] = 1
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "lerning-rate" in _error(["recommend", str(tmp_path), "--items", "1"], capsys)


# --- the data set's own ids and titles ------------------------------------------


def _ml100k(root: Path) -> Path:
    """A tiny ML-100K folder: sparse raw ids (item 1000 and up), titles in Latin-1."""
    rng = np.random.default_rng(0)
    lines = [f"{u}\t{1000 + 7 * i}\t{rng.integers(1, 6)}\t{880000000 + u * 100 + i}"
             for u in range(1, 31) for i in sorted(rng.choice(40, size=8, replace=False))]  # fmt: skip
    root.mkdir()
    (root / "u.data").write_text("\n".join(lines) + "\n")
    titles = [f"{1000 + 7 * i}|Film {i} (Caf\xe9)|01-Jan-1995||http://x|0|1" for i in range(40)]
    (root / "u.item").write_bytes(("\n".join(titles) + "\n").encode("latin-1"))
    return root


def test_raw_ids_are_what_the_loader_numbers(tmp_path: Path):
    root = _ml100k(tmp_path / "ml")
    data = load_ml100k(root)
    users, items = load_raw_ids("ml-100k", root)
    raw = np.loadtxt(root / "u.data", dtype=np.int64)
    np.testing.assert_array_equal(users[data.users], raw[:, 0])
    np.testing.assert_array_equal(items[data.items], raw[:, 1])
    cfg = Config.of(dataset="ml-100k", data_dir=str(root), eval_negatives=5)
    np.testing.assert_array_equal(raw_ids(cfg)[1], items)
    assert item_titles(cfg)["1007"] == "Film 1 (Caf\xe9)"


def test_recommend_speaks_the_data_sets_ids_and_titles(tmp_path: Path, capsys):
    root = _ml100k(tmp_path / "ml")
    run = _simulate(tmp_path / "run", ["engine=inprocess", "dataset=ml-100k", f"data-dir={root}", "eval-negatives=5",
                                       "dim=4", "rounds=1", "clients-per-round=5"])  # fmt: skip
    capsys.readouterr()
    assert main(["recommend", str(run), "--items", "1007,1014", "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "1007  Film 1 (Caf\xe9)" in out
    top = _top(out)
    assert len(top) == 3 and all(int(i) >= 1000 and i not in ("1007", "1014") for i in top)
    assert "unknown item id(s) 1" in _error(["recommend", str(run), "--items", "1"], capsys)


def test_titles_files(tmp_path: Path):
    movies = tmp_path / "movies.dat"
    movies.write_bytes("1::Toy Story (1995)::Animation\n2::Am\xe9lie::Comedy|Romance\n\n".encode("latin-1"))
    assert load_titles(movies) == {"1": "Toy Story (1995)", "2": "Am\xe9lie"}
    movies.write_text("1::Toy Story (1995)::Animation\nToy Story 2\n")
    with pytest.raises(DatasetError, match="movies.dat line 2"):
        load_titles(movies)


def test_ncf_item_map(tmp_path: Path):
    assert load_ncf_item_map(tmp_path) is None
    (tmp_path / "item_map.tsv").write_text("ncf_item\tMovieID\tmovieid_certain\n0\t1193\t1\n1\t661\t1\n")
    np.testing.assert_array_equal(load_ncf_item_map(tmp_path), [1193, 661])
    (tmp_path / "item_map.tsv").write_text("ncf_item\tMovieID\n0\t1193\n1\t661\n2\t1193\n")
    with pytest.raises(DatasetError, match="item_map.tsv line 4: MovieID 1193 already maps NCF item 0"):
        load_ncf_item_map(tmp_path)
