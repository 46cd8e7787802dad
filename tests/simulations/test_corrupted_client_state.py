"""Corrupted client state fails that client only (in process; the Flower
ClientApp reads it through the same checks, tests/client/test_client_app.py).

A checkpointed in-process run keeps its clients' state in files; each of
two dozen clients gets its state damaged or planted in its own way (cut
short, a damaged header, arrays that are not plain npy, wrong dtypes or
shapes, non-finite or x1e30 values, row ids out of range) and the run is
resumed: it goes on, exactly those clients' replies fail, each with a
`StateError` saying what is wrong, the others are accepted, and the model
stays of the scale it had."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from prunus.client import state_store
from prunus.client.state_format import pack, unpack
from prunus.common.config import load
from prunus.common.params import from_record, npy_array, to_record
from prunus.common.payload import Arrays, Content, NpyArray
from prunus.server.checkpoint import load as load_checkpoint
from prunus.server.model_store import load_model
from prunus.simulations.simulate import run_simulate

USERS = 40
SETTINGS = ["engine=inprocess", "rounds=2", "checkpoint-every=1", "prune-method=topk-global", "density=0.1",
            f"synthetic-users={USERS}", "synthetic-items=60", "eval-negatives=20", "dim=4",
            f"clients-per-round={USERS}", "eval-every=100", "seed=1"]  # fmt: skip

Edit = Callable[[Path], None]


def _bytes(edit: Callable[[bytes], bytes]) -> Edit:
    return lambda path: path.write_bytes(edit(path.read_bytes()))


def _state(edit: Callable[[Content], None]) -> Edit:
    def rewrite(path: Path) -> None:
        with open(path, "rb") as handle:
            state = unpack(handle.read, str(path))
        edit(state)
        head, blobs = pack(state)
        path.write_bytes(head + b"".join(blobs))

    return rewrite


def _values(record: str, change: Callable[[np.ndarray], np.ndarray]) -> Edit:
    """Every float array of `record` changed (a residual's values, the user vectors)."""

    def edit(state: Content) -> None:
        arrays = from_record(state[record])
        state[record] = to_record({k: change(v) if v.dtype.kind == "f" else v for k, v in arrays.items()})

    return _state(edit)


def _put(record: str, name: str, array: NpyArray | np.ndarray) -> Edit:
    def edit(state: Content) -> None:
        state[record] = Arrays({**state[record], name: array if isinstance(array, NpyArray) else npy_array(array)})

    return _state(edit)


def _zip_bomb() -> NpyArray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("user_embedding.weight.npy", b"\0" * 10**7)
    return NpyArray("float32", (1, 4), buffer.getvalue())


def _rows_residual(ids: list[int], shape: tuple[int, ...] = (60, 4)) -> Edit:
    """The item table's residual as rows `ids` of a tensor of `shape` (the form a sparse residual takes)."""

    def edit(state: Content) -> None:
        arrays = {k: v for k, v in from_record(state["residual"]).items() if not k.startswith("item_embedding")}
        arrays |= {"item_embedding.weight.rows": np.array(ids, np.int32),
                   "item_embedding.weight.shape": np.array(shape, np.int64),
                   "item_embedding.weight.val": np.full((len(ids), 4), 0.1, np.float32)}
        state["residual"] = to_record(arrays)

    return _state(edit)


def _pickled() -> NpyArray:
    buffer = io.BytesIO()
    np.save(buffer, np.array([None, "x"], object), allow_pickle=True)
    return NpyArray("object", (2,), buffer.getvalue())


_SHAPE_BOMB = npy_array(np.zeros(1, np.float32)).data.replace(b"(1,)", b"(1000000, 1000000)")

CORRUPTIONS: dict[str, tuple[Edit, str]] = {
    "empty file": (_bytes(lambda b: b""), "0 of its 8 length bytes"),
    "cut in the length": (_bytes(lambda b: b[:5]), "5 of its 8 length bytes"),
    "cut in the header": (_bytes(lambda b: b[:30]), "is truncated: its header needs"),
    "cut in the arrays": (_bytes(lambda b: b[:-7]), "is truncated: 'residual/"),
    "header length 2**62": (_bytes(lambda b: (2**62).to_bytes(8, "little") + b[8:]), "it claims 4,611,686"),
    "random bytes": (_bytes(lambda b: np.random.default_rng(0).bytes(len(b))), "damaged header: it claims"),
    "header not json": (_bytes(lambda b: b[:8] + b"#" + b[9:]), "damaged header: Expecting value"),
    "header a list": (_bytes(lambda b: (5).to_bytes(8, "little") + b"[1,2]"), "a JSON list, not an object"),
    "header overlapping": (_bytes(lambda b: b.replace(b", 0, ", b", 4, ", 1)), "the arrays before it end at"),
    "zip bomb": (_put("private", "user_embedding.weight", _zip_bomb()), "not an npy array"),
    "npy shape bomb": (_put("private", "user_embedding.weight", NpyArray("float32", (1,), _SHAPE_BOMB)),
                       r"claims shape \(1000000, 1000000\)"),
    "pickled objects": (_put("private", "user_embedding.weight", _pickled()), "not a plain number type"),
    "user vectors float64": (_values("private", lambda v: v.astype(np.float64)), "is float64 of shape"),
    "user vectors reshaped": (_values("private", lambda v: v.reshape(-1)), r"not float32 of shape \(1, 4\)"),
    "user vectors NaN": (_values("private", lambda v: v * np.nan), "'user_embedding.weight' holds NaN"),
    "user vectors x1e30": (_values("private", lambda v: v * np.float32(1e30)), "beyond the 1e\\+06"),
    "residual infinite": (_values("residual", lambda v: v + np.inf), "holds NaN or infinity"),
    "residual x1e30": (_values("residual", lambda v: v * np.float32(1e30)), "beyond the 1e\\+06"),
    "residual integers": (_values("residual", lambda v: v.astype(np.int64)), "not float32"),
    "residual a row short": (_values("residual", lambda v: v[:-1]), r"values of shape \(59, "),
    "residual rows out of range": (_rows_residual([3, 60]), r"increasing strictly within \[0, 60\)"),
    "residual rows negative": (_rows_residual([-2, 3]), "increasing strictly"),
    "residual shape of its own": (_rows_residual([3], (10**9, 4)), r"shape \[1000000000, 4\] of int64"),
    "residual of another model": (_put("residual", "user_embedding.weight.val", np.ones((1, 4), np.float32)),
                                  r"tensors \['user_embedding.weight'\] are not the model's"),
}


def _newest(store: Path, partition: int) -> Path:
    return max((store / str(partition)).glob("*.state"), key=lambda p: int(p.stem))


def test_each_corrupted_client_state_fails_that_client_only(tmp_path):
    cfg = load(None, [*SETTINGS, f"out={tmp_path}"])
    run_simulate(cfg)
    store = state_store.store_of(cfg)
    scale = _largest(tmp_path)
    damaged = dict(enumerate(CORRUPTIONS))
    assert len(damaged) < USERS  # the others stay honest
    for partition, name in damaged.items():
        CORRUPTIONS[name][0](_newest(store, partition))

    summary = run_simulate(cfg.replace(rounds=3), resume=load_checkpoint(tmp_path))

    clients = pd.read_csv(tmp_path / "clients.csv")
    third = clients[(clients["round"] == 3) & (clients["kind"] == "train")].set_index("partition")["status"]
    assert sorted(third.index) == list(range(USERS))
    assert {p for p, status in third.items() if status == "failed"} == set(damaged)
    assert (third.drop(index=list(damaged)) == "accepted").all()
    assert summary["failures"] == len(damaged) and summary["rejected"] == 0
    reasons = dict(re.findall(r"round 3: train reply of partition (\d+) failed: (.*)", (tmp_path / "run.log").read_text()))
    for partition, name in damaged.items():
        assert re.search("StateError: client state.*" + CORRUPTIONS[name][1], reasons[str(partition)]), (name, reasons)
    assert _largest(tmp_path) < 10 * scale


def _largest(run: Path) -> float:
    return max(float(np.abs(value).max()) for value in load_model(run / "model.npz").values())
