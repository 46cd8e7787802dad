"""Every registered downlink method: the broadcast a client decodes is the server's model.

int8 has a scale per row (one large entry costs only its row's precision) and
rounds to the nearest step; what lies beyond a method's range is clipped, so
every finite model travels.

Parametrised over `DOWNLINK.names()`, each with the model as it is and with a
pruned model (`model-sparsity`, whose zeros travel as such): the round trip is
exact where the payload is float32 and within the value codec's bound
otherwise (per row for the row-block methods), a partial broadcast (some
item rows) decodes to those rows of the whole one, and a broadcast that does
not fit the client's model is a `PayloadError`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prunus.common.codec import max_abs_error, read_header, record_payload
from prunus.common.codec_rows import as_rows, max_row_error
from prunus.common.codec_values import round_trip
from prunus.common.compression import DOWNLINK, BroadcastContext, PayloadError
from prunus.common.compression.base import put_rows, row_shapes, take_rows
from prunus.common.compression.broadcast import SCALES, RowBlockBroadcast, beyond
from prunus.common.config import Config
from prunus.common.params import npy_array
from prunus.common.payload import Arrays

METHODS = DOWNLINK.names()
SPARSITY = {"dense model": 0.0, "pruned model": 0.5}


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    """Global shared parameters: an item table (with pruned zeros), biases, a dense layer."""
    rng = np.random.default_rng(seed)
    items = rng.normal(scale=0.1, size=(50, 4)).astype(np.float32)
    items[rng.random(items.shape) < 0.5] = 0.0
    return {
        "item_embedding.weight": items,
        "item_bias.weight": rng.normal(size=(50, 1)).astype(np.float32),
        "mlp.0.weight": rng.normal(size=(3, 8)).astype(np.float32),
        "mlp.0.bias": rng.normal(size=3).astype(np.float32),
    }


SHAPES = {name: value.shape for name, value in _params().items()}


def _method(name: str, sparsity: float):
    return DOWNLINK.get(name)(Config.of(downlink_codec=name, model_sparsity=sparsity).compression)


def _codec_of(record: Arrays, name: str) -> str | None:
    """The value codec a tensor's payload says it used (None: a plain float32 array)."""
    array = record[name]
    return read_header(record_payload(name, array)).value_codec if array.dtype == "uint8" else None


@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_the_broadcast_round_trip_reproduces_the_model(name, sparsity):
    params = _params()
    before = {k: v.copy() for k, v in params.items()}
    method = _method(name, sparsity)
    record = method.encode(params, BroadcastContext(1, 0))
    assert all(np.array_equal(params[k], before[k]) for k in params)  # the model is not touched
    decoded = _method(name, sparsity).decode(record, SHAPES)  # the client's instance
    assert set(decoded) == set(SHAPES)
    for tensor, value in params.items():
        got = decoded[tensor]
        assert got.shape == value.shape and got.dtype == np.float32
        error = np.abs(got.astype(np.float64) - value)
        if isinstance(method, RowBlockBroadcast):
            assert (as_rows(error).max(1) <= max_row_error(as_rows(value), method.bits, stochastic=True)).all()
        elif _codec_of(record, tensor) in (None, "fp32"):
            np.testing.assert_array_equal(got, value)
        else:
            assert error.max() <= max_abs_error(value[value != 0], _codec_of(record, tensor))
        assert not got[value == 0].any()  # a pruned entry stays pruned
    if name == "fp32":
        assert all(_codec_of(record, t) in (None, "fp32") for t in SHAPES)


def _reshaped(tensor: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {**SHAPES, tensor: shape}


BAD_SHAPES = {
    "transposed": _reshaped("item_embedding.weight", (4, 50)),
    "more items": _reshaped("item_embedding.weight", (51, 4)),
    "more dims": _reshaped("mlp.0.bias", (3, 1)),
    "a model tensor the broadcast lacks": {**SHAPES, "item_gmf.weight": (50, 4)},
    "a broadcast tensor the model lacks": {k: v for k, v in SHAPES.items() if k != "mlp.0.weight"},
}


@pytest.mark.parametrize("bad", BAD_SHAPES, ids=list(BAD_SHAPES))
@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_a_broadcast_of_other_shapes_is_a_payload_error(name, sparsity, bad):
    method = _method(name, sparsity)
    record = method.encode(_params(), BroadcastContext(1, 0))
    with pytest.raises(PayloadError):
        method.decode(record, BAD_SHAPES[bad])


@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_a_broadcast_missing_a_tensor_is_a_payload_error(name, sparsity):
    method = _method(name, sparsity)
    record = method.encode(_params(), BroadcastContext(1, 0))
    short = Arrays({k: v for k, v in record.items() if k != "item_bias.weight"})
    with pytest.raises(PayloadError):
        method.decode(short, SHAPES)


@pytest.mark.parametrize("name", METHODS)
def test_a_lossy_broadcast_is_smaller(name):
    """Sanity of the registry's choices: every non-fp32 method sends fewer bytes than fp32."""
    from prunus.common.params import wire_bytes

    params = _params()
    size = wire_bytes(_method(name, 0.0).encode(params, BroadcastContext(1, 0)))
    reference = wire_bytes(_method("fp32", 0.0).encode(params, BroadcastContext(1, 0)))
    assert size <= reference


ROWS = {"item_embedding.weight": np.array([0, 3, 7, 49]), "item_bias.weight": np.array([0, 3, 7, 49])}


@pytest.mark.parametrize("name", METHODS)
def test_a_partial_broadcast_carries_only_its_rows_and_they_match_the_whole_one(name):
    params, ctx = _params(), BroadcastContext(3, 0)
    method = _method(name, 0.0)
    whole = _method(name, 0.0).decode(method.encode(params, ctx), SHAPES)
    record = method.encode(params, BroadcastContext(3, 0, ROWS))
    blocks = _method(name, 0.0).decode(record, row_shapes(SHAPES, ROWS))
    assert {k: v.shape for k, v in blocks.items()} == row_shapes(SHAPES, ROWS)
    full = put_rows(blocks, ROWS, SHAPES)
    for tensor, ids in ROWS.items():
        assert not np.delete(full[tensor], ids, axis=0).any()  # nothing outside the rows sent
    exact = isinstance(method, RowBlockBroadcast) or _codec_of(record, "item_embedding.weight") in (None, "fp32")
    if exact:  # every client of a round decodes the same values for a row
        for tensor, value in take_rows(whole, ROWS).items():
            np.testing.assert_array_equal(blocks[tensor], value)
    assert len(record["item_embedding.weight"].data) < len(method.encode(params, ctx)["item_embedding.weight"].data)


@pytest.mark.parametrize("name", [n for n in METHODS if issubclass(DOWNLINK.get(n), RowBlockBroadcast)
                                  and DOWNLINK.get(n).stochastic])
def test_stochastic_rounding_is_seeded_by_the_round_and_unbiased(name):
    params = _params()
    codes = [_method(name, 0.0).encode(params, BroadcastContext(r, 0))["mlp.0.weight"].data for r in (1, 1, 2)]
    assert codes[0] == codes[1] and codes[0] != codes[2]
    mean = np.mean([_method(name, 0.0).decode(_method(name, 0.0).encode(params, BroadcastContext(r, 0)), SHAPES)
                    ["mlp.0.weight"] for r in range(400)], axis=0)
    step = np.abs(params["mlp.0.weight"]).max(1, keepdims=True) / (2 ** (DOWNLINK.get(name).bits - 1) - 1)
    assert (np.abs(mean - params["mlp.0.weight"]) <= 0.25 * step).all()  # 400 draws: within 5 standard errors


@pytest.mark.parametrize("name", [n for n in METHODS if issubclass(DOWNLINK.get(n), RowBlockBroadcast)
                                  and DOWNLINK.get(n).stochastic])
def test_nearest_rounding_is_at_most_half_a_step_off_and_the_same_every_round(name):
    params = _params()
    method = DOWNLINK.get(name)(Config.of(downlink_codec=name, downlink_rounding="nearest").compression)
    sent = [method.decode(method.encode(params, BroadcastContext(r, 0)), SHAPES) for r in (1, 2)]
    bits = DOWNLINK.get(name).bits
    for tensor, value in params.items():
        np.testing.assert_array_equal(sent[0][tensor], sent[1][tensor])
        error = np.abs(as_rows(sent[0][tensor]) - as_rows(value))
        assert (error.max(1) <= max_row_error(as_rows(value), bits, stochastic=False)).all()


@pytest.mark.parametrize("name", [n for n in METHODS if issubclass(DOWNLINK.get(n), RowBlockBroadcast)])
def test_a_malformed_row_block_is_a_payload_error(name):
    method = _method(name, 0.0)
    record = method.encode(_params(), BroadcastContext(1, 0))
    data = record["item_embedding.weight"].numpy()
    rng = np.random.default_rng(0)


    cases = [data[:-1], np.concatenate([data, [0]]), data[:10]]
    for _ in range(200):
        flipped = data.copy()
        flipped[rng.integers(len(data))] ^= np.uint8(1 << rng.integers(8))
        cases.append(flipped)
    for case in cases:
        bad = Arrays({**record, "item_embedding.weight": npy_array(np.ascontiguousarray(case))})
        try:
            decoded = method.decode(bad, SHAPES)
        except PayloadError:
            continue
        assert np.isfinite(decoded["item_embedding.weight"]).all()  # a flip that still decodes is a valid block


# ------------------------------------------------------------ int8 per row
def _step(rows: np.ndarray) -> np.ndarray:
    return np.abs(rows.astype(np.float64)).max(axis=1) / 127


@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
def test_one_large_entry_costs_int8_only_its_own_row(sparsity):
    """The audit's case: a table of small values and one entry of 1.0 (a scale per
    tensor decoded a quarter of them to 0); per row, only that row is coarser."""
    rng = np.random.default_rng(3)
    table = rng.normal(scale=2e-3, size=(105, 4)).astype(np.float32)
    table[7, 2] = 1.0
    params, shapes = {"item_embedding.weight": table}, {"item_embedding.weight": table.shape}
    method = _method("int8", sparsity)
    got = _method("int8", sparsity).decode(method.encode(params, BroadcastContext(1, 0)), shapes)["item_embedding.weight"]
    others = np.delete(np.arange(len(table)), 7)
    per_tensor = round_trip("int8", table.ravel()).reshape(table.shape)  # the former codec: one scale
    lost, lost_per_tensor = np.count_nonzero(got[others] == 0), np.count_nonzero(per_tensor[others] == 0)
    assert lost_per_tensor > 200 and lost <= 2  # of 416 small values
    assert (np.abs(got - table).max(1) <= 0.5 * _step(table) * (1 + 2.0**-9) + 2.0**-25).all()


@settings(max_examples=150, deadline=None)
@given(table=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9),
                        elements=st.floats(allow_nan=False, allow_infinity=False, width=32)),
       pruned=st.booleans())
def test_int8_round_trips_within_half_a_step_per_row_for_any_finite_model(table, pruned):
    """For any finite float32 tensor (huge entries clipped to the range first)."""
    method = _method("int8", SPARSITY["pruned model"] if pruned else 0.0)
    shapes = {"t": table.shape}
    got = _method("int8", 0.5 if pruned else 0.0).decode(method.encode({"t": table}, BroadcastContext(1, 0)), shapes)["t"]
    assert got.shape == table.shape and np.isfinite(got).all()
    sent = as_rows(np.clip(table, -method.limit, method.limit))
    error = np.abs(as_rows(got).astype(np.float64) - sent)
    assert (error.max(1) <= max_row_error(sent, 8, stochastic=False)).all()
    assert not got[table == 0].any()


def _pruned_params() -> dict[str, np.ndarray]:
    params = _params()
    params["item_embedding.weight"][np.random.default_rng(1).random((50, 4)) < 0.9] = 0.0  # 90% pruned
    return params


def test_a_pruned_int8_broadcast_sends_a_tensor_as_its_non_zeros_where_that_is_smaller():
    params = _pruned_params()
    pruned = _method("int8", 0.9).encode(params, BroadcastContext(1, 0))
    dense = _method("int8", 0.0).encode(params, BroadcastContext(1, 0))
    assert "item_embedding.weight" + SCALES in pruned and "item_bias.weight" + SCALES not in pruned  # biases: no zeros
    assert len(pruned["item_embedding.weight"].data) + len(pruned["item_embedding.weight" + SCALES].data) \
        < len(dense["item_embedding.weight"].data)
    assert pruned["item_bias.weight"].data == dense["item_bias.weight"].data


def test_malformed_row_scales_of_a_pruned_int8_broadcast_are_a_payload_error():
    method = _method("int8", 0.9)
    record = method.encode(_pruned_params(), BroadcastContext(1, 0))
    key = "item_embedding.weight" + SCALES
    assert key in record
    for bad in (np.full(50, np.inf, np.float16), -np.ones(50, np.float16), np.ones(49, np.float16),
                np.ones(50, np.float32), np.ones(50, ">f2")):
        with pytest.raises(PayloadError, match="scales"):
            method.decode(Arrays({**record, key: npy_array(bad)}), SHAPES)
    with pytest.raises(PayloadError):  # scales for a tensor sent as a row block
        method.decode(Arrays({**record, "item_bias.weight" + SCALES: record[key]}), SHAPES)


# ------------------------------------------------------------ clipping
@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_a_hostile_huge_value_is_clipped_and_the_model_still_travels(name, sparsity):
    params = _params()
    params["item_bias.weight"][4, 0] = 3.0e38
    params["mlp.0.weight"][1, 2] = -1e30
    method = _method(name, sparsity)
    assert beyond(params, method.limit) == (0 if name == "fp32" else 2)
    decoded = _method(name, sparsity).decode(method.encode(params, BroadcastContext(1, 0)), SHAPES)
    assert all(np.isfinite(v).all() for v in decoded.values())
    limit = min(method.limit, 3.0e38)
    np.testing.assert_allclose(decoded["item_bias.weight"][4, 0], limit, rtol=2e-2)
    np.testing.assert_allclose(decoded["mlp.0.weight"][1, 2], -min(method.limit, 1e30), rtol=2e-2)


@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_a_broadcast_with_extra_tensors_is_refused_before_any_array_is_read(name, sparsity, monkeypatch):
    """fp32 and fp16 read (and decoded) every array a broadcast held before
    checking its names: 5,000 copies of the item table under other names cost a
    client 4.3 GB and 13 s before it learnt they were no tensors of its model."""
    from prunus.common import params as params_module

    method = _method(name, sparsity)
    record = method.encode(_params(), BroadcastContext(1, 0))
    extra = Arrays({**record, **{f"extra-{i}": record["item_embedding.weight"] for i in range(100)}})
    read = []
    real = params_module.array_of
    monkeypatch.setattr(params_module, "array_of", lambda *args, **kwargs: read.append(1) or real(*args, **kwargs))
    with pytest.raises(PayloadError, match="extra-0"):
        method.decode(extra, SHAPES)
    assert not read


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_plain_broadcast_holding_a_non_finite_value_is_a_payload_error(value):
    """A plain float32 broadcast was taken as it came: with one flipped exponent
    bit a client trained on NaN and sent NaN back (or, with a codec uplink, failed
    in its encoder)."""
    method = _method("fp32", 0.0)
    params = _params()
    record = method.encode(params, BroadcastContext(1, 0))
    bias = params["mlp.0.bias"].copy()
    bias[1] = value
    with pytest.raises(PayloadError, match="NaN or an infinity"):
        method.decode(Arrays({**record, "mlp.0.bias": npy_array(bias)}), SHAPES)


# ------------------------------------------------------------ deflate stage
ROW_BLOCKS = [n for n in METHODS if issubclass(DOWNLINK.get(n), RowBlockBroadcast)]


def _deflated(name: str, **changes) -> RowBlockBroadcast:
    return DOWNLINK.get(name)(Config.of(downlink_codec=name, downlink_entropy="deflate", **changes).compression)


@pytest.mark.parametrize("name", ROW_BLOCKS)
def test_a_deflated_broadcast_decodes_the_same_values_in_fewer_bytes(name):
    """Lossless: the same values as the plain row blocks, whole or partial;
    fewer bytes where the codes are skewed, as 4- and 2-bit codes of a
    trained model's rows are."""
    rng = np.random.default_rng(1)
    params = _params() | {"item_embedding.weight": rng.normal(scale=0.1, size=(50, 64)).astype(np.float32)}
    shapes = {k: v.shape for k, v in params.items()}
    rows = {"item_embedding.weight": np.arange(3, 40, 2), "item_bias.weight": np.arange(3, 40, 2)}
    for ctx in (BroadcastContext(2, 0), BroadcastContext(2, 0, rows=rows)):
        wanted = shapes if ctx.rows is None else row_shapes(shapes, ctx.rows)
        plain, deflated = _method(name, 0.0), _deflated(name)
        sent, packed = plain.encode(params, ctx), deflated.encode(params, ctx)
        got, want = deflated.decode(packed, wanted), plain.decode(sent, wanted)
        for tensor in params:
            np.testing.assert_array_equal(got[tensor], want[tensor])
        size, plain_size = len(packed["item_embedding.weight"].data), len(sent["item_embedding.weight"].data)
        # 8-bit codes of a Gaussian carry 7.8 bits: DEFLATE then stores the block (5 bytes of framing)
        assert size < plain_size if DOWNLINK.get(name).bits <= 4 else size <= plain_size + 5


@pytest.mark.parametrize("name", ROW_BLOCKS)
def test_a_malformed_deflated_block_is_a_payload_error(name):
    method = _deflated(name)
    record = method.encode(_params(), BroadcastContext(1, 0))
    data = record["item_embedding.weight"].numpy()
    plain = _method(name, 0.0).encode(_params(), BroadcastContext(1, 0))["item_embedding.weight"].numpy()
    rng = np.random.default_rng(0)
    cases = [data[:-1], np.concatenate([data, [0]]), data[:5], plain]  # plain: a block that was never deflated
    for _ in range(200):
        flipped = data.copy()
        flipped[rng.integers(len(data))] ^= np.uint8(1 << rng.integers(8))
        cases.append(flipped)
    refused = 0
    for case in cases:
        bad = Arrays({**record, "item_embedding.weight": npy_array(np.ascontiguousarray(case))})
        try:
            decoded = method.decode(bad, SHAPES)
        except PayloadError:
            refused += 1
            continue
        assert np.isfinite(decoded["item_embedding.weight"]).all()  # a flip that still decodes is a valid block
    assert refused >= 4


@pytest.mark.parametrize("name", [n for n in METHODS if n not in ROW_BLOCKS])
def test_deflate_with_a_downlink_of_no_row_blocks_is_a_config_error(name):
    with pytest.raises(ValueError, match="downlink-entropy"):
        Config.of(downlink_codec=name, downlink_entropy="deflate")
