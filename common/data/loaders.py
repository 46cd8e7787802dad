"""Fast, strict loaders for MovieLens, the NCF split and generic tables.

Parsing is vectorised (numpy line checks, pandas C parser); only when a check
fails does a loader go back to find the first bad line, so that the error can
name the file and the 1-based line number.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from prunus.common.data.errors import DatasetError
from prunus.common.data.interactions import Interactions
from prunus.common.data.split import SplitData, _contains, _latest_unique, _pair_keys

_UNIT_SEPARATOR = "\x1f"  # stands in for multi-character separators so the C parser can be used
_NCF_PAIR = r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$"

Where = Callable[[int], str]  # 0-based row -> "file line N" for error messages


def load_ml100k(path: str | Path) -> Interactions:
    """ML-100K ``u.data`` (a directory holding it, or the file): user item rating timestamp, tab-separated."""
    return _remap(*_ml100k_records(path))


def load_ml1m(path: str | Path) -> Interactions:
    """ML-1M ratings: ``UserID::MovieID::Rating[::Timestamp]``.

    ``path`` is the file or a directory holding ``ratings.dat`` (preferred) or
    ``ratings.no_timestamps.dat``. The three-field form gives no timestamps.
    """
    return _remap(*_ml1m_records(path))


def load_ncf(path: str | Path) -> SplitData:
    """The NCF leave-one-out split: ``train.rating``, ``test.rating``, ``test.negative``.

    Ids are already 0-based; ``n_users``/``n_items`` are the largest id seen in
    any file plus one. A negative equal to the user's *test* item is accepted:
    the official ML-1M file has 156 of them (NCF's own evaluation collapses
    them), so evaluators must count only negatives scored strictly higher than
    the test item. A negative that is a *train* positive is an error.
    """
    train_file, test_file, negative_file = _ncf_files(Path(path))
    train_users, train_items, train_times = _ncf_ratings(train_file)
    test_users, test_items, _ = _ncf_ratings(test_file)
    _check_unique_users(test_file.name, test_users)
    negatives = _ncf_negatives(negative_file, test_users, test_items)

    n_users = int(max(train_users.max(), test_users.max()) + 1)
    n_items = int(max(train_items.max(), test_items.max(), negatives.max()) + 1)
    kept = _latest_unique(train_users, train_items, train_times, n_items)
    train_keys = _pair_keys(train_users[kept], train_items[kept], n_items)
    _check_not_in_train(test_file.name, train_keys, n_items, test_users, test_items[:, None], "test item")
    _check_not_in_train(negative_file.name, train_keys, n_items, test_users, negatives, "negative")

    test_table = np.full(n_users, -1, dtype=np.int64)
    test_table[test_users] = test_items
    negative_table = np.full((n_users, negatives.shape[1]), -1, dtype=np.int64)
    negative_table[test_users] = negatives
    return SplitData(
        n_users=n_users,
        n_items=n_items,
        train_users=train_users[kept],
        train_items=train_items[kept],
        test_items=test_table,
        test_negatives=negative_table,
        train_timestamps=None if train_times is None else train_times[kept],
    )


def load_table(
    path: str | Path,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = "rating",
    timestamp_col: str | None = "timestamp",
) -> Interactions:
    """Interactions from a ``.csv`` (with header) or ``.parquet`` table.

    User and item columns are required and may hold ids of any type; they are
    remapped to contiguous ids in sorted order. Rating and timestamp columns
    are used when present (pass None to ignore one); datetime timestamps
    become seconds since the epoch.
    """
    frame, where = _table_frame(Path(path), (user_col, item_col))
    users, user_ids = _codes(frame[user_col], where)
    items, item_ids = _codes(frame[item_col], where)
    ratings = timestamps = None
    if rating_col is not None and rating_col in frame.columns:
        ratings = _finite(frame[rating_col], where, rating_col).astype(np.float32)
    if timestamp_col is not None and timestamp_col in frame.columns:
        timestamps = _timestamps(frame[timestamp_col], where, timestamp_col)
    return Interactions(users, items, ratings, timestamps, len(user_ids), len(item_ids))


def load_raw_ids(fmt: str, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The data's own ids behind a loader's contiguous indices: (user ids, item ids).

    Entry i of each array is the raw id of index i as :func:`load_ml100k`
    (``fmt="ml-100k"``), :func:`load_ml1m` (``"ml-1m"``) or :func:`load_table`
    with its default columns (``"csv"``) number them: the ids in sorted order.
    """
    if fmt == "csv":
        frame, where = _table_frame(Path(path), ("user", "item"))
        return _codes(frame["user"], where)[1], _codes(frame["item"], where)[1]
    readers = {"ml-100k": _ml100k_records, "ml-1m": _ml1m_records}
    if fmt not in readers:
        raise ValueError(f"no raw ids for format {fmt!r}; expected ml-100k, ml-1m or csv")
    name, frame = readers[fmt](path)
    return _unique_ids(name, frame, 0, "user id")[0], _unique_ids(name, frame, 1, "item id")[0]


def load_ncf_item_map(path: str | Path) -> np.ndarray | None:
    """MovieLens MovieID of every NCF item id, from ``item_map.tsv`` (None if absent).

    The file has a header naming ``ncf_item`` and ``MovieID`` (tab-separated);
    its NCF ids must be 0..n-1 in order and its MovieIDs distinct.
    """
    file = Path(path) / "item_map.tsv"
    if not file.is_file():
        return None
    frame = pd.read_csv(file, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in ("ncf_item", "MovieID") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{file.name}: missing column(s) {missing}; columns are {list(frame.columns)}")

    def where(row: int) -> str:
        return f"{file.name} line {row + 2}"  # line 1 is the header

    ncf = _integers(frame["ncf_item"], where, "ncf_item")
    movie_ids = _integers(frame["MovieID"], where, "MovieID")
    wrong = ncf != np.arange(len(ncf))
    if wrong.any():
        row = int(np.argmax(wrong))
        raise DatasetError(f"{where(row)}: expected ncf_item {row} (ids 0..n-1 in order), got {ncf[row]}")
    order = np.argsort(movie_ids, kind="stable")
    repeats = np.flatnonzero(movie_ids[order][1:] == movie_ids[order][:-1])
    if repeats.size:
        first, again = order[repeats[0]], order[repeats[0] + 1]
        raise DatasetError(f"{where(again)}: MovieID {movie_ids[again]} already maps NCF item {first}")
    return movie_ids


def load_titles(path: str | Path) -> dict[str, str]:
    """Item titles by raw id from ML-1M ``movies.dat`` (``MovieID::Title::Genres``)
    or ML-100K ``u.item`` (``id|title|...``), both Latin-1."""
    file = Path(path)
    if not file.is_file():
        raise DatasetError(
            f"{file} does not exist; expected movies.dat (MovieID::Title::Genres) or u.item (id|title|...)"
        )
    lines = file.read_bytes().decode("latin-1").splitlines()
    sep = "::" if lines and "::" in lines[0] else "|"
    titles: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split(sep, 2)
        if len(fields) < 2 or not fields[0].strip().isdigit():
            raise DatasetError(f"{file.name} line {number}: expected 'id{sep}title{sep}...', got {line[:60]!r}")
        titles[str(int(fields[0]))] = fields[1].strip()
    return titles


# --- files -----------------------------------------------------------------


def _ml100k_records(path: str | Path) -> tuple[str, pd.DataFrame]:
    file = _resolve(path, ("u.data",), "ML-100K u.data (tab-separated user item rating timestamp)")
    return file.name, _read_records(file, "\t", (4,))


def _ml1m_records(path: str | Path) -> tuple[str, pd.DataFrame]:
    file = _resolve(
        path,
        ("ratings.dat", "ratings.no_timestamps.dat"),
        "ML-1M ratings ('UserID::MovieID::Rating[::Timestamp]')",
    )
    return file.name, _read_records(file, "::", (3, 4))


def _table_frame(file: Path, required: Sequence[str]) -> tuple[pd.DataFrame, Where]:
    """A csv/parquet table with its `required` columns, and how to name its rows."""
    if not file.is_file():
        raise DatasetError(f"{file} does not exist; expected a .csv or .parquet table")
    frame, unit, first = _read_any_table(file)

    def where(row: int) -> str:
        return f"{file.name} {unit} {row + first}"

    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"{file.name}: missing column(s) {missing}; columns are {list(frame.columns)}")
    return frame, where


def _resolve(path: str | Path, names: Sequence[str], what: str) -> Path:
    """``path`` if it is a file, else the first of ``names`` inside the directory ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise DatasetError(f"{path}: no {' or '.join(names)} in this directory; expected {what}")
    raise DatasetError(f"{path} does not exist; expected {what}")


def _read_records(file: Path, sep: str, allowed: Sequence[int] | None) -> pd.DataFrame:
    """Headerless delimited file as a frame with columns 0..k-1; row i is line i+1.

    Every line must have the same number of fields, one of ``allowed`` (any
    count of at least 2 if None). Trailing empty lines are ignored.
    """
    raw = file.read_bytes()
    raw = raw.removeprefix(codecs.BOM_UTF8)
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    char = sep
    if len(sep) > 1:
        raw, char = raw.replace(sep.encode(), _UNIT_SEPARATOR.encode()), _UNIT_SEPARATOR
    n_fields = _check_lines(file.name, raw, char, sep, allowed)
    return pd.read_csv(
        io.BytesIO(raw),
        sep=char,
        header=None,
        names=range(n_fields),
        engine="c",
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        na_values=[""],
        low_memory=False,
    )


def _check_lines(name: str, raw: bytes, char: str, sep: str, allowed: Sequence[int] | None) -> int:
    """Field count shared by all lines; DatasetError at the first empty or odd line."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    if buf.size and buf[-1] != ord("\n"):
        ends = np.append(ends, buf.size)
    lengths = np.diff(np.concatenate(([-1], ends))) - 1
    non_empty = np.flatnonzero(lengths > 0)
    if non_empty.size == 0:
        raise DatasetError(f"{name}: file is empty")
    n_lines = non_empty[-1] + 1
    ends, lengths = ends[:n_lines], lengths[:n_lines]
    seps_before_end = np.searchsorted(np.flatnonzero(buf == ord(char)), ends)
    fields = np.diff(np.concatenate(([0], seps_before_end))) + 1
    expected = int(fields[0])
    ok_first = expected >= 2 if allowed is None else expected in allowed
    bad = (lengths == 0) | (fields != expected) | (not ok_first)
    if not bad.any():
        return expected
    line = int(np.argmax(bad))
    label = "tabs" if sep == "\t" else repr(sep)
    if lengths[line] == 0:
        raise DatasetError(f"{name} line {line + 1}: empty line")
    if not ok_first:
        want = "at least 2" if allowed is None else " or ".join(map(str, allowed))
    else:
        want = f"{expected} (as on line 1)"
    raise DatasetError(
        f"{name} line {line + 1}: expected {want} fields separated by {label}, got {fields[line]}"
    )


def _read_any_table(file: Path) -> tuple[pd.DataFrame, str, int]:
    """Frame of a csv/parquet file, plus how to name its rows: ("line", 2) or ("row", 1)."""
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(file), "row", 1
    if suffix != ".csv":
        raise DatasetError(f"{file.name}: unsupported table type {suffix!r}; expected .csv or .parquet")
    try:
        frame = pd.read_csv(file, skip_blank_lines=False, low_memory=False)
    except pd.errors.ParserError as error:  # wrong field count; pandas counts lines from 1
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if found is None:
            raise DatasetError(f"{file.name}: {error}") from error
        want, line, got = found.groups()
        raise DatasetError(f"{file.name} line {line}: expected {want} fields, got {got}") from error
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"{file.name}: {error}") from error
    non_empty = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    return frame.iloc[: non_empty[-1] + 1 if non_empty.size else 0], "line", 2


# --- columns ----------------------------------------------------------------


def _int_column(name: str, frame: pd.DataFrame, k: int, what: str) -> np.ndarray:
    """Column k of a headerless file as int64."""
    return _integers(frame[k], _lines(name), what)


def _float_column(name: str, frame: pd.DataFrame, k: int, what: str) -> np.ndarray:
    """Column k as float64; DatasetError at the first value that is not a finite number."""
    return _finite(frame[k], _lines(name), what)


def _lines(name: str) -> Where:
    """Row i of a headerless file is line i + 1."""
    return lambda row: f"{name} line {row + 1}"


def _non_negative_ids(name: str, frame: pd.DataFrame, k: int, what: str) -> np.ndarray:
    """Column k as already-contiguous ids (NCF files), which cannot be negative."""
    ids = _int_column(name, frame, k, what)
    if ids.size and ids.min() < 0:
        line = int(np.argmax(ids < 0))
        raise DatasetError(f"{name} line {line + 1}: {what} must be >= 0, got {ids[line]}")
    return ids


def _remap(name: str, frame: pd.DataFrame) -> Interactions:
    """Interactions from a user/item/rating[/timestamp] frame, ids made contiguous."""
    user_ids, users = _unique_ids(name, frame, 0, "user id")
    item_ids, items = _unique_ids(name, frame, 1, "item id")
    ratings = _float_column(name, frame, 2, "rating").astype(np.float32)
    timestamps = _int_column(name, frame, 3, "timestamp") if 3 in frame else None
    return Interactions(
        users.astype(np.int64), items.astype(np.int64), ratings, timestamps, len(user_ids), len(item_ids)
    )


def _unique_ids(name: str, frame: pd.DataFrame, k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Column k's distinct integer ids (sorted) and every row's index into them."""
    return np.unique(_int_column(name, frame, k, what), return_inverse=True)


def _codes(column: pd.Series, where: Where) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids of any type as contiguous codes in sorted order of the raw ids; and those ids."""
    missing = column.isna().to_numpy()
    if missing.any():
        raise DatasetError(f"{where(int(np.argmax(missing)))}: missing {column.name}")
    try:
        codes, uniques = pd.factorize(column, sort=True)
    except TypeError as error:
        raise DatasetError(f"{where(0)}: column {column.name} mixes id types ({error})") from error
    return codes.astype(np.int64), np.asarray(uniques)


def _finite(column: pd.Series, where: Where, what: str) -> np.ndarray:
    """Numeric column as float64; DatasetError at the first non-numeric or missing value."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise DatasetError(f"{where(row)}: {what} must be a finite number, got {_shown(column.iloc[row])}")
    return values


def _timestamps(column: pd.Series, where: Where, what: str) -> np.ndarray:
    """Integer timestamps as is; datetimes as whole seconds since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(column):
        moments = pd.to_datetime(column, utc=True)
        missing = moments.isna().to_numpy()
        if missing.any():
            raise DatasetError(f"{where(int(np.argmax(missing)))}: missing {what}")
        return ((moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
    return _integers(column, where, what)


def _integers(column: pd.Series, where: Where, what: str) -> np.ndarray:
    """Column as int64; DatasetError at the first value that is not an integer."""
    if column.dtype.kind in "iu":
        return column.to_numpy(np.int64)
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = int(np.argmax(bad))
        raise DatasetError(f"{where(row)}: {what} must be an integer, got {_shown(column.iloc[row])}")
    return values.astype(np.int64)


def _shown(value: object) -> str:
    return "an empty field" if pd.isna(value) else repr(str(value))


# --- NCF -----------------------------------------------------------------------


def _ncf_files(root: Path) -> tuple[Path, Path, Path]:
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a directory with train.rating, test.rating and test.negative")
    return (
        _resolve(root / "train.rating", (), "user\\titem\\trating[\\ttimestamp] lines"),
        _resolve(root / "test.rating", (), "user\\titem\\trating\\ttimestamp lines"),
        _resolve(root / "test.negative", (), "'(user,item)\\tneg1\\t...' lines"),
    )


def _ncf_ratings(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Users, items and (if present) timestamps of a train.rating/test.rating file."""
    frame = _read_records(file, "\t", (3, 4))
    users = _non_negative_ids(file.name, frame, 0, "user id")
    items = _non_negative_ids(file.name, frame, 1, "item id")
    _float_column(file.name, frame, 2, "rating")
    return users, items, _int_column(file.name, frame, 3, "timestamp") if 3 in frame else None


def _ncf_negatives(file: Path, test_users: np.ndarray, test_items: np.ndarray) -> np.ndarray:
    """(n_test, n_neg) negatives, line i matching test.rating line i."""
    frame = _read_records(file, "\t", None)
    negatives = [_non_negative_ids(file.name, frame, k, "negative item id") for k in range(1, frame.shape[1])]
    _check_ncf_pairs(file.name, frame[0], test_users, test_items)
    return np.column_stack(negatives).astype(np.int64)



def _check_ncf_pairs(name: str, pairs: pd.Series, test_users: np.ndarray, test_items: np.ndarray) -> None:
    """Line i of test.negative must start with '(user,item)' of test.rating line i."""
    parsed = pairs.astype(str).str.extract(_NCF_PAIR)
    malformed = parsed[0].isna().to_numpy()
    if malformed.any():
        line = int(np.argmax(malformed))
        raise DatasetError(
            f"{name} line {line + 1}: expected '(user,item)' first, got {_shown(pairs.iloc[line])}"
        )
    if len(parsed) != len(test_users):
        raise DatasetError(
            f"{name}: {len(parsed)} lines, expected one per test.rating line ({len(test_users)})"
        )
    users, items = (parsed[k].to_numpy(np.int64) for k in (0, 1))
    mismatch = (users != test_users) | (items != test_items)
    if mismatch.any():
        line = int(np.argmax(mismatch))
        raise DatasetError(
            f"{name} line {line + 1}: pair ({users[line]},{items[line]}) does not match "
            f"test.rating line {line + 1} ({test_users[line]},{test_items[line]})"
        )


def _check_unique_users(name: str, users: np.ndarray) -> None:
    """Leave-one-out means one test row per user."""
    _, first = np.unique(users, return_index=True)
    repeated = np.ones(len(users), dtype=bool)
    repeated[first] = False
    if repeated.any():
        line = int(np.argmax(repeated))
        raise DatasetError(f"{name} line {line + 1}: user {users[line]} already has a test item")


def _check_not_in_train(
    name: str, train_keys: np.ndarray, n_items: int, users: np.ndarray, items: np.ndarray, what: str
) -> None:
    """No test item or negative of a user may be one of that user's train positives."""
    leaked = _contains(train_keys, _pair_keys(users[:, None], items, n_items))
    if leaked.any():
        line, column = np.unravel_index(int(np.argmax(leaked)), leaked.shape)
        raise DatasetError(
            f"{name} line {line + 1}: {what} {items[line, column]} is a train positive of user {users[line]}"
        )
