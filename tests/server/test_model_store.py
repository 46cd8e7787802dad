"""Served codecs (`server.model_store`): every codec round-trips within its
bound at the size it claims, and a damaged or forged model file is a
`ModelFileError` naming the tensor, never another exception."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunus.common.codec import encode
from prunus.common.codec_rows import max_row_error, pack_rows, quantise_rows
from prunus.common.update import nonzeros
from prunus.server.model_store import (
    MODEL_FILE,
    SERVED_CODECS,
    ModelFileError,
    decode_tensor,
    load_model,
    save_model,
)

ITEMS, BIAS = "item_embedding.weight", "item_bias.weight"
TMP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _model(rng: np.random.Generator, items: int = 300, dim: int = 16) -> dict[str, np.ndarray]:
    return {ITEMS: rng.normal(scale=0.3, size=(items, dim)).astype(np.float32),
            BIAS: rng.normal(scale=2.0, size=(items, 1)).astype(np.float32)}  # fmt: skip


def _bound(value: np.ndarray, codec: str) -> np.ndarray:
    """How far each entry of `value` may decode from itself in `codec`."""
    if codec == "fp32":
        return np.zeros_like(value, dtype=np.float64)
    if codec in ("int8", "int4") and value.ndim == 2 and value.shape[1] >= 2:
        rows = max_row_error(value, 8 if codec == "int8" else 4, stochastic=False)
        return np.broadcast_to(rows[:, None], value.shape)
    return np.maximum(np.abs(value.astype(np.float64)) * 2.0**-11, 2.0**-25)  # fp16, rounded to nearest


@TMP
@given(codec=st.sampled_from(SERVED_CODECS), items=st.integers(1, 40), dim=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1), pruned=st.booleans())  # fmt: skip
def test_every_codec_round_trips_within_its_bound(tmp_path: Path, codec, items, dim, seed, pruned):
    rng = np.random.default_rng(seed)
    params = {**_model(rng, items, dim), "scale": np.float32(rng.normal()).reshape(())}
    if pruned:
        params[ITEMS][rng.random(params[ITEMS].shape) < 0.5] = 0.0
    info = save_model(tmp_path, params, [ITEMS], codec)
    assert info["codec"] == codec and info["file_bytes"] == (tmp_path / MODEL_FILE).stat().st_size
    back = load_model(tmp_path / MODEL_FILE)
    assert set(back) == set(params)
    for name, value in params.items():
        assert back[name].dtype == np.float32 and back[name].shape == value.shape
        assert (np.abs(back[name] - value) <= _bound(value, codec)).all(), name
        assert (back[name][value == 0] == 0).all()  # a pruned entry stays exactly zero


def test_fp32_is_the_format_every_run_already_saves(tmp_path: Path):
    """The default codec writes the bytes the model store always wrote, so every saved run still loads."""
    params = _model(np.random.default_rng(0))
    save_model(tmp_path, params, [ITEMS])
    legacy = tmp_path / "legacy.npz"
    np.savez(legacy, **{n: np.frombuffer(encode(*nonzeros(v)), np.uint8) for n, v in params.items()})
    assert legacy.read_bytes() == (tmp_path / MODEL_FILE).read_bytes()


def test_each_codec_is_smaller_and_keeps_biases_at_fp16(tmp_path: Path):
    params = _model(np.random.default_rng(1), items=2000, dim=64)
    sizes = {codec: save_model(tmp_path / codec, params, [ITEMS], codec)["file_bytes"] for codec in SERVED_CODECS}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["int4"]
    table = 2000 * 64 * 4
    assert abs(sizes["int8"] - (table / 4 + 2000 * (2 + 2))) < 2000  # a code a value; a scale and an fp16 bias an item
    assert abs(sizes["int4"] - (table / 8 + 2000 * (2 + 2))) < 2000
    for codec in ("fp16", "int8", "int4"):
        bias = load_model(tmp_path / codec / MODEL_FILE)[BIAS]
        np.testing.assert_array_equal(bias, params[BIAS].astype(np.float16).astype(np.float32))


def test_what_a_codec_cannot_carry_is_refused_by_name(tmp_path: Path):
    params = {ITEMS: np.full((3, 2), 1e5, np.float32), BIAS: np.full((3, 1), 1e5, np.float32)}
    with pytest.raises(ValueError, match="tensor 'item_bias.weight' at int8: values exceed the float16 range"):
        save_model(tmp_path, params, [ITEMS], "int8")
    with pytest.raises(ValueError, match="served codec 'int2': expected one of fp32, fp16, int8, int4"):
        save_model(tmp_path, params, [ITEMS], "int2")


# --- the loader trusts nothing ---------------------------------------------------------


def _saved(tmp_path: Path, codec: str) -> dict[str, bytes]:
    save_model(tmp_path, _model(np.random.default_rng(2), items=20, dim=8), [ITEMS], codec)
    with np.load(tmp_path / MODEL_FILE) as archive:
        return {name: archive[name].tobytes() for name in archive.files}


def _forge(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _payload(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


def _row_block_with_scale(scale: float) -> bytes:
    scales, codes = quantise_rows(np.ones((2, 3), np.float32), 8)
    scales[1] = scale
    return pack_rows(scales, codes, 8)


@pytest.mark.parametrize(("payload", "reason"), [
    (np.zeros(8, np.float32), "expected a 1-D uint8 payload"),
    (np.zeros((2, 40), np.uint8), "expected a 1-D uint8 payload"),
    (_payload(b"NOPE" + bytes(40)), "bad magic"),
    (_payload(_row_block_with_scale(np.nan)), "scales are negative or not finite"),
    (_payload(_row_block_with_scale(-1.0)), "scales are negative or not finite"),
    (_payload(_row_block_with_scale(1.0)[:-1]), "expected 24"),
    (_payload(pack_rows(*quantise_rows(np.ones((2, 3), np.float32), 2), 2)), "a 2-bit row block"),
    (_payload(pack_rows(*quantise_rows(np.ones((4, 1), np.float32), 8), 8)), "of 1 columns"),
    (_payload(encode(np.arange(2), np.ones(2), (2,))[:-4] + np.float32(np.nan).tobytes()), "values are not finite"),
])  # fmt: skip
def test_a_forged_tensor_is_refused_with_the_reason(tmp_path: Path, payload: np.ndarray, reason: str):
    with pytest.raises(ModelFileError, match=f"tensor 'w': .*{reason}"):
        load_model(_forge(tmp_path / "m.npz", w=payload))


@pytest.mark.parametrize(("content", "reason"), [
    (b"not a zip at all", "not a readable model file"),
    (b"", "not a readable model file"),
])  # fmt: skip
def test_a_file_that_is_no_archive_is_refused(tmp_path: Path, content: bytes, reason: str):
    (tmp_path / MODEL_FILE).write_bytes(content)
    with pytest.raises(ModelFileError, match=reason):
        load_model(tmp_path / MODEL_FILE)


def test_a_pickled_or_single_array_file_is_refused(tmp_path: Path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ModelFileError, match="a single array"):
        load_model(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="tensor 'w': .*pickle"):
        load_model(tmp_path / "obj.npz")


def test_a_truncated_archive_is_refused(tmp_path: Path):
    save_model(tmp_path, _model(np.random.default_rng(3)), [ITEMS], "int8")
    data = (tmp_path / MODEL_FILE).read_bytes()
    (tmp_path / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(tmp_path / MODEL_FILE)


@TMP
@given(codec=st.sampled_from(SERVED_CODECS), name=st.sampled_from([ITEMS, BIAS]), data=st.data())
def test_any_damage_to_a_payload_decodes_finite_or_is_a_codec_error(tmp_path: Path, codec, name, data):
    """Truncated, extended or with bytes overwritten, a payload decodes to a finite
    float32 tensor or raises CodecError (a ModelFileError when loaded): nothing else."""
    payload = bytearray(_saved(tmp_path, codec)[name])
    cut = data.draw(st.integers(0, len(payload) + 4), label="length")
    payload = payload[:cut] + bytes(max(0, cut - len(payload)))
    for _ in range(data.draw(st.integers(0, 4), label="overwrites")):
        if payload:
            at = data.draw(st.integers(0, len(payload) - 1), label="at")
            payload[at] = data.draw(st.integers(0, 255), label="byte")
    try:
        value = decode_tensor(_payload(bytes(payload)))
    except ValueError as err:
        assert type(err).__name__ == "CodecError", err
    else:
        assert value.dtype == np.float32 and np.isfinite(value).all()


def test_a_row_block_header_that_claims_more_than_it_holds_is_refused(tmp_path: Path):
    block = bytearray(_saved(tmp_path, "int8")[ITEMS])
    struct.pack_into("<I", block, 6, 2**31)  # rows
    with pytest.raises(ModelFileError, match="row block of .* bytes, expected"):
        load_model(_forge(tmp_path / "m.npz", w=_payload(bytes(block))))
