"""Loaders: every format parses, bad lines are reported by file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunus.common.data import DatasetError, load_ml1m, load_ml100k, load_ncf, load_table

DATASETS = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- MovieLens ----------------------------------------------------------------


def test_ml100k_remaps_ids_contiguously(tmp_path: Path) -> None:
    write(tmp_path / "u.data", ["196\t242\t3\t881250949", "7\t302\t4\t891717742", "196\t5\t1\t878887116"])
    data = load_ml100k(tmp_path)
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 3)
    np.testing.assert_array_equal(data.users, [1, 0, 1])  # raw 7 < 196
    np.testing.assert_array_equal(data.items, [1, 2, 0])  # raw 5 < 242 < 302
    np.testing.assert_array_equal(data.ratings, [3, 4, 1])
    np.testing.assert_array_equal(data.timestamps, [881250949, 891717742, 878887116])
    assert (data.users.dtype, data.items.dtype) == (np.int64, np.int64)
    assert (data.ratings.dtype, data.timestamps.dtype) == (np.float32, np.int64)


def test_ml100k_accepts_the_file_itself(tmp_path: Path) -> None:
    file = write(tmp_path / "anything.tsv", ["1\t1\t5\t10"])
    assert len(load_ml100k(file)) == 1


def test_ml1m_four_fields(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", ["1::1193::5::978300760", "1::661::3::978302109", "2::1193::4::978298413"])
    data = load_ml1m(tmp_path)
    assert (data.n_users, data.n_items) == (2, 2)
    np.testing.assert_array_equal(data.items, [1, 0, 1])
    np.testing.assert_array_equal(data.timestamps, [978300760, 978302109, 978298413])


def test_ml1m_three_fields_has_no_timestamps(tmp_path: Path) -> None:
    write(tmp_path / "ratings.no_timestamps.dat", ["1::1::5", "1::48::5", "3::1::2"])
    data = load_ml1m(tmp_path)
    assert data.timestamps is None
    assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
    np.testing.assert_array_equal(data.ratings, [5, 5, 2])


def test_ml1m_prefers_ratings_dat(tmp_path: Path) -> None:
    write(tmp_path / "ratings.no_timestamps.dat", ["1::1::5"])
    write(tmp_path / "ratings.dat", ["1::1::5::7", "2::2::4::8"])
    assert load_ml1m(tmp_path).timestamps is not None


def test_tolerates_crlf_and_trailing_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_bytes(b"1::1::5::7\r\n2::2::4::8\r\n\r\n\n")
    data = load_ml1m(tmp_path)
    assert len(data) == 2
    np.testing.assert_array_equal(data.timestamps, [7, 8])


GOOD_ML1M = ["1::1::5::7", "1::2::3::8"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("1::3", "expected 4 (as on line 1) fields separated by '::', got 2"),
        ("1::3::4", "expected 4 (as on line 1) fields separated by '::', got 3"),
        ("1::x::4::9", "item id must be an integer, got 'x'"),
        ("1.5::3::4::9", "user id must be an integer"),
        ("1::3::good::9", "rating must be a finite number, got 'good'"),
        ("1::3::4::", "timestamp must be an integer, got an empty field"),
        ("", "empty line"),
    ],
)
def test_ml1m_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    write(tmp_path / "ratings.dat", [*GOOD_ML1M, bad_line, "2::1::4::9"])
    with pytest.raises(DatasetError, match=r"ratings\.dat line 3: ") as error:
        load_ml1m(tmp_path)
    assert message in str(error.value)


def test_ml1m_bad_first_line_lists_accepted_forms(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", ["1::2", "1::1::5"])
    with pytest.raises(DatasetError, match=r"ratings\.dat line 1: expected 3 or 4 fields separated by '::', got 2"):
        load_ml1m(tmp_path)


def test_ml100k_malformed_line(tmp_path: Path) -> None:
    write(tmp_path / "u.data", ["1\t1\t5\t10", "1\t2\t5\t11", "1\t3\t5\t12", "1 4 5 13"])
    message = r"u\.data line 4: expected 4 \(as on line 1\) fields separated by tabs, got 1"
    with pytest.raises(DatasetError, match=message):
        load_ml100k(tmp_path)


def test_missing_files_name_the_path_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no ratings\.dat or ratings\.no_timestamps\.dat"):
        load_ml1m(tmp_path)
    with pytest.raises(DatasetError, match=r"nowhere.*does not exist; expected ML-100K u\.data"):
        load_ml100k(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"file is empty"):
        load_ml100k(write(tmp_path / "u.data", []))


# --- NCF ------------------------------------------------------------------------


def write_ncf(root: Path, *, negatives: tuple[str, str] = ("(0,3)\t4\t5", "(1,0)\t5\t6")) -> Path:
    write(root / "train.rating", ["0\t0\t5", "0\t1\t3", "0\t2\t4", "1\t1\t5", "1\t2\t4", "2\t4\t3"])
    write(root / "test.rating", ["0\t3\t5\t100", "1\t0\t4\t200"])
    write(root / "test.negative", list(negatives))
    return root


def test_ncf_trio(tmp_path: Path) -> None:
    split = load_ncf(write_ncf(tmp_path))
    assert (split.n_users, split.n_items) == (3, 7)  # item 6 appears only as a negative
    np.testing.assert_array_equal(split.train_users, [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(split.user_items(1), [1, 2])
    np.testing.assert_array_equal(split.test_items, [3, 0, -1])
    np.testing.assert_array_equal(split.test_negatives, [[4, 5], [5, 6], [-1, -1]])
    assert split.train_timestamps is None


def test_ncf_keeps_train_timestamps_when_present(tmp_path: Path) -> None:
    write_ncf(tmp_path)
    write(tmp_path / "train.rating", ["0\t0\t5\t10", "0\t1\t3\t11", "1\t1\t5\t12"])
    split = load_ncf(tmp_path)
    np.testing.assert_array_equal(split.train_timestamps, [10, 11, 12])


def test_ncf_accepts_test_item_among_negatives(tmp_path: Path) -> None:
    """The official ML-1M file has such lines; NCF's evaluation collapses them."""
    split = load_ncf(write_ncf(tmp_path, negatives=("(0,3)\t3\t5", "(1,0)\t5\t6")))
    np.testing.assert_array_equal(split.test_negatives[0], [3, 5])


@pytest.mark.parametrize(
    ("negatives", "message"),
    [
        (("(0,3)\t4\t5", "(1,0)\t2\t6"), r"test\.negative line 2: negative 2 is a train positive of user 1"),
        (("(0,3)\t4\t5", "(2,0)\t5\t6"), r"test\.negative line 2: pair \(2,0\) does not match test\.rating line 2"),
        (("(0,3)\t4\t5", "1,0\t5\t6"), r"test\.negative line 2: expected '\(user,item\)' first"),
        (("(0,3)\t4\t5", "(1,0)\t5"), r"test\.negative line 2: expected 3 \(as on line 1\) fields"),
        (("(0,3)\t4\t5", "(1,0)\t-5\t6"), r"test\.negative line 2: negative item id must be >= 0"),
        (("(0,3)\t4\t5",), r"test\.negative: 1 lines, expected one per test\.rating line \(2\)"),
    ],
)
def test_ncf_inconsistent_negatives(tmp_path: Path, negatives: tuple[str, ...], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_ncf(write_ncf(tmp_path, negatives=negatives))


def test_ncf_malformed_train_and_test(tmp_path: Path) -> None:
    write_ncf(tmp_path)
    write(tmp_path / "train.rating", ["0\t0\t5", "0\t1\t3", "0\tx\t4"])
    with pytest.raises(DatasetError, match=r"train\.rating line 3: item id must be an integer"):
        load_ncf(tmp_path)
    write_ncf(tmp_path)
    write(tmp_path / "test.rating", ["0\t3\t5\t100", "0\t0\t4\t200"])
    with pytest.raises(DatasetError, match=r"test\.rating line 2: user 0 already has a test item"):
        load_ncf(tmp_path)
    write(tmp_path / "test.rating", ["0\t3\t5\t100", "1\t2\t4\t200"])
    write(tmp_path / "test.negative", ["(0,3)\t4\t5", "(1,2)\t5\t6"])
    with pytest.raises(DatasetError, match=r"test\.rating line 2: test item 2 is a train positive of user 1"):
        load_ncf(tmp_path)
    (tmp_path / "test.negative").unlink()
    with pytest.raises(DatasetError, match=r"test\.negative does not exist"):
        load_ncf(tmp_path)


# --- tables ---------------------------------------------------------------------


def test_csv_with_string_ids(tmp_path: Path) -> None:
    file = tmp_path / "log.csv"
    file.write_text("user,item,rating,timestamp\nbob,m9,4.5,30\nalice,m1,3,10\nbob,m1,5,20\n")
    data = load_table(file)
    np.testing.assert_array_equal(data.users, [1, 0, 1])  # alice < bob
    np.testing.assert_array_equal(data.items, [1, 0, 0])
    np.testing.assert_array_equal(data.ratings, [4.5, 3, 5])
    np.testing.assert_array_equal(data.timestamps, [30, 10, 20])


def test_csv_optional_columns_and_renames(tmp_path: Path) -> None:
    file = tmp_path / "log.csv"
    file.write_text("uid,iid,score\n10,20,1\n11,20,0\n")
    data = load_table(file, user_col="uid", item_col="iid", rating_col=None)
    assert (data.n_users, data.n_items, data.ratings, data.timestamps) == (2, 1, None, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,2,3\n4,5,6\n7,8,9,10\n", r"log\.csv line 4: expected 3 fields, got 4"),
        ("1,2,3\n\n4,5,6\n", r"log\.csv line 3: missing user"),
        ("1,2,3\n4,,6\n", r"log\.csv line 3: missing item"),
        ("1,2,3\n4,5,bad\n", r"log\.csv line 3: rating must be a finite number, got 'bad'"),
    ],
)
def test_csv_malformed_line(tmp_path: Path, body: str, message: str) -> None:
    file = tmp_path / "log.csv"
    file.write_text("user,item,rating\n" + body)
    with pytest.raises(DatasetError, match=message):
        load_table(file)


def test_table_missing_column_and_bad_suffix(tmp_path: Path) -> None:
    file = tmp_path / "log.csv"
    file.write_text("person,item\n1,2\n")
    with pytest.raises(DatasetError, match=r"log\.csv: missing column\(s\) \['user'\]"):
        load_table(file)
    with pytest.raises(DatasetError, match=r"unsupported table type '\.json'"):
        load_table(write(tmp_path / "log.json", ["{}"]))


def test_parquet_with_datetime_timestamps(tmp_path: Path) -> None:
    file = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "user": [5, 3, 5],
            "item": ["b", "a", "a"],
            "timestamp": pd.to_datetime([10, 20, 30], unit="s"),
        }
    ).to_parquet(file)
    data = load_table(file)
    np.testing.assert_array_equal(data.users, [1, 0, 1])
    np.testing.assert_array_equal(data.items, [1, 0, 0])
    np.testing.assert_array_equal(data.timestamps, [10, 20, 30])
    assert data.ratings is None


def test_parquet_missing_value_names_row(tmp_path: Path) -> None:
    file = tmp_path / "log.parquet"
    pd.DataFrame({"user": [1.0, None], "item": [1, 2]}).to_parquet(file)
    with pytest.raises(DatasetError, match=r"log\.parquet row 2: missing user"):
        load_table(file)


# --- the real data sets -----------------------------------------------------------


def real(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real data not available at {path}")
    return path


def test_real_ml100k() -> None:
    data = load_ml100k(real("ml-100k"))
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100_000)
    assert data.timestamps is not None
    assert set(np.unique(data.ratings)) == {1, 2, 3, 4, 5}


def test_real_ml1m() -> None:
    data = load_ml1m(real("ml-1m"))
    assert (data.n_users, data.n_items, len(data)) == (6040, 3706, 1_000_209)
    assert data.timestamps is None  # only the three-field file is shipped


def test_real_ncf() -> None:
    split = load_ncf(real("ncf-ml-1m"))
    assert (split.n_users, split.n_items, len(split.train_users)) == (6040, 3706, 994_169)
    assert split.test_negatives.shape == (6040, 99)
    assert (split.test_items >= 0).all()
    assert split.indptr[-1] == 994_169
