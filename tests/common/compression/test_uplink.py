"""Every registered uplink method: its client half and its server half agree.

Parametrised over `UPLINK.names()` (and the value codecs of `VALUES`), so a
method added as a new module under `common/compression/uplink/` is checked
here with no edit: its payload decodes into an update of the model's shapes,
with error feedback what it sent plus what it kept is the corrected update,
and a payload that does not fit the model is a `PayloadError`.
"""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes, arrays

from prunus.common.codec import encode, max_abs_error, read_header, record_payload
from prunus.common.compression import UPLINK, VALUES, Encoded, PayloadError, RoundContext, make
from prunus.common.compression.sparse import owe, residual_from_state, residual_to_state
from prunus.common.compression.uplink.lowrank import LowRankOptions
from prunus.common.config import Config
from prunus.common.params import from_record, npy_array, to_record
from prunus.common.payload import Arrays
from prunus.common.pruning import density_at
from prunus.common.update import Dense, Factored, Sparse, densify, sent_entries, shape_of, to_dense

# every method, and the variants that encode differently ("method:rank-basis")
METHODS = [*UPLINK.names(), "lowrank:client"]
VALUE_CODECS = VALUES.names()


def _update(seed: int = 0) -> dict[str, np.ndarray]:
    """A client's update as a recommender makes it: a row-sparse item table,
    a bias column, a dense layer, a 1-D bias and a tensor it never touched."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(50, 4)).astype(np.float32) * (rng.random((50, 1)) < 0.3)
    return {
        "item_embedding.weight": items,
        "item_bias.weight": rng.normal(size=(50, 1)).astype(np.float32),
        "mlp.0.weight": rng.normal(size=(3, 8)).astype(np.float32),
        "mlp.0.bias": rng.normal(size=3).astype(np.float32),
        "output.weight": np.zeros((1, 5), np.float32),
    }


SHAPES = {name: value.shape for name, value in _update().items()}


def _method(name: str, **settings):
    """The method built from its config section, as client and server build it."""
    name, _, basis = name.partition(":")
    values = {"density": 0.1, "prune_threshold": 0.5, **({"rank_basis": basis} if basis else {}), **settings}
    cfg = Config.of(prune_method=name, **values)
    return make(UPLINK, name, cfg)


def _ctx(server_round: int = 1, partition: int = 0, seed: int = 0, lr: float = 1.0) -> RoundContext:
    return RoundContext(server_round=server_round, partition_id=partition, seed=seed, lr=lr)


def _kept(encoded: Encoded) -> dict[str, np.ndarray]:
    """The error-feedback residual the client keeps (per unit of local lr), dense.

    Read with the shared sparse half's state reader: a method that keeps its
    state in another layout needs its own reader here.
    """
    return residual_from_state(encoded.state) if encoded.state else {}


def _payload_codecs(record: Arrays) -> dict[str, str | None]:
    """Per tensor, the value codec its payload says it used (None: a plain float32 array)."""
    codecs: dict[str, str | None] = {}
    for name, array in record.items():
        codecs[name] = read_header(record_payload(name, array)).value_codec if array.dtype == "uint8" else None
    return codecs


def _reconstructs(sent: np.ndarray, kept: np.ndarray, lr: float, corrected: np.ndarray) -> None:
    """sent + lr * kept == corrected, up to a few float32 roundings (the
    quantisation error is in `kept`; storing it per unit of lr rounds twice)."""
    total = sent.astype(np.float64) + lr * kept.astype(np.float64)
    tol = 2.0**-20 * (np.abs(corrected).astype(np.float64) + np.abs(sent)) + 1e-30
    assert np.all(np.abs(total - corrected) <= tol), np.abs(total - corrected).max()


# ------------------------------------------------------------ round trip
@pytest.mark.parametrize("value_codec", VALUE_CODECS)
@pytest.mark.parametrize("name", METHODS)
def test_payload_decodes_into_an_update_of_the_model(name, value_codec):
    method = _method(name, value_codec=value_codec)
    encoded = method.encode(_update(), None, _ctx())
    assert isinstance(encoded, Encoded)
    assert not set(encoded.state) & set(encoded.record)  # the state never travels
    decoded = _method(name, value_codec=value_codec).decode(encoded.record, SHAPES, _ctx())  # the server's instance
    assert set(decoded) == set(SHAPES)
    for tensor, update in decoded.items():
        assert isinstance(update, (Dense, Sparse, Factored))
        assert shape_of(update) == SHAPES[tensor]
        assert densify({tensor: update})[tensor].dtype == np.float32
    assert encoded.nnz == sum(sent_entries(t) for t in decoded.values())
    assert 0 < encoded.density <= 1
    # what travelled is within its value codec's bound of the update
    codecs = _payload_codecs(encoded.record)
    for tensor, sent in densify(decoded).items():
        original = _update()[tensor]
        update = decoded[tensor]
        if isinstance(update, Factored):  # a projection: what it loses is the residual's (checked below)
            continue
        at = update.indices if isinstance(update, Sparse) else np.flatnonzero(sent.ravel())
        codec = codecs[tensor]
        bound = 0.0 if codec is None else max_abs_error(original.ravel()[at], codec)
        assert np.abs(sent.ravel()[at].astype(np.float64) - original.ravel()[at]).max(initial=0.0) <= bound
        if codec is None:  # a plain array is the update itself
            np.testing.assert_array_equal(sent, original)


@pytest.mark.parametrize("value_codec", VALUE_CODECS)
@pytest.mark.parametrize("name", METHODS)
def test_sent_plus_kept_residual_is_the_corrected_update(name, value_codec):
    """Error feedback over two rounds at different local learning rates: the
    residual is kept per unit of lr and lands at the next round's lr."""
    method = _method(name, value_codec=value_codec, error_feedback=True)
    lr1, lr2 = 2.0, 0.5
    first = method.encode(_update(1), None, _ctx(1, 3, lr=lr1))
    sent1, kept1 = densify(method.decode(first.record, SHAPES, _ctx(1, 3))), _kept(first)
    assert set(kept1) <= set(SHAPES)
    for tensor, value in _update(1).items():
        kept = kept1.get(tensor, np.zeros(value.shape, np.float32))
        assert kept.shape == value.shape
        _reconstructs(sent1[tensor], kept, lr1, value)
    # the state as the client keeps it between rounds (a Flower record)
    state = from_record(to_record(first.state))
    second = method.encode(_update(2), state, _ctx(5, 3, lr=lr2))
    sent2, kept2 = densify(method.decode(second.record, SHAPES, _ctx(5, 3))), _kept(second)
    for tensor, value in _update(2).items():
        zero = np.zeros(value.shape, np.float32)
        corrected = value + kept1.get(tensor, zero) * np.float32(lr2)
        _reconstructs(sent2[tensor], kept2.get(tensor, zero), lr2, corrected)


@pytest.mark.parametrize("name", METHODS)
def test_the_residual_is_kept_per_unit_of_learning_rate(name):
    """The same update at lr 4 leaves a quarter of what it leaves at lr 1 (a
    returning client's leftover must not land at an old rate)."""
    method = _method(name, value_codec="int8")
    at_one = _kept(method.encode(_update(), None, _ctx(lr=1.0)))
    at_four = _kept(method.encode(_update(), None, _ctx(lr=4.0)))
    assert set(at_one) == set(at_four)
    for tensor in at_one:
        np.testing.assert_allclose(at_four[tensor] * 4.0, at_one[tensor], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", METHODS)
def test_without_error_feedback_nothing_is_kept(name):
    method = _method(name, value_codec="int8", error_feedback=False)
    first = method.encode(_update(1), None, _ctx(1))
    assert not any(np.any(value) for value in _kept(first).values())
    # so the next round is as if there were no state
    with_state = method.encode(_update(2), from_record(to_record(first.state)), _ctx(2))
    without = method.encode(_update(2), None, _ctx(2))
    assert _records_equal(with_state.record, without.record)


@pytest.mark.parametrize("name", METHODS)
def test_state_survives_the_client_state_record(name):
    """Encoding from the state as it comes back from `context.state` is
    encoding from the state itself."""
    method = _method(name, value_codec="int8")
    first = method.encode(_update(1), None, _ctx(1))
    assert all(isinstance(v, np.ndarray) for v in first.state.values())
    direct = method.encode(_update(2), first.state, _ctx(2, lr=0.5))
    restored = method.encode(_update(2), from_record(to_record(first.state)), _ctx(2, lr=0.5))
    assert _records_equal(direct.record, restored.record)
    assert direct.state.keys() == restored.state.keys()
    assert all(np.array_equal(direct.state[k], restored.state[k]) for k in direct.state)


@pytest.mark.parametrize("name", METHODS)
def test_encoding_is_a_function_of_update_state_and_context(name):
    method = _method(name, value_codec="fp16")
    a, b = method.encode(_update(), None, _ctx(2, 7)), method.encode(_update(), None, _ctx(2, 7))
    assert _records_equal(a.record, b.record) and a.nnz == b.nnz


def _records_equal(a: Arrays, b: Arrays) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k].numpy(), b[k].numpy()) for k in a
    )


# ------------------------------------------------------- bad payloads
def _reshaped(tensor: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {**SHAPES, tensor: shape}


BAD_SHAPES = {
    "transposed": _reshaped("item_embedding.weight", (4, 50)),
    "fewer rows": _reshaped("item_embedding.weight", (49, 4)),
    "more dims": _reshaped("mlp.0.bias", (3, 1)),
    "a model tensor the payload lacks": {**SHAPES, "item_gmf.weight": (50, 4)},
    "a payload tensor the model lacks": {k: v for k, v in SHAPES.items() if k != "mlp.0.weight"},
}


@pytest.mark.parametrize("value_codec", ["fp32", "int8"])
@pytest.mark.parametrize("bad", BAD_SHAPES, ids=list(BAD_SHAPES))
@pytest.mark.parametrize("name", METHODS)
def test_a_payload_for_other_shapes_is_a_payload_error(name, bad, value_codec):
    method = _method(name, value_codec=value_codec)
    record = method.encode(_update(), None, _ctx()).record
    with pytest.raises(PayloadError):
        method.decode(record, BAD_SHAPES[bad], _ctx())


@pytest.mark.parametrize("value_codec", ["fp32", "int8"])
@pytest.mark.parametrize("name", METHODS)
def test_a_payload_missing_a_tensor_is_a_payload_error(name, value_codec):
    method = _method(name, value_codec=value_codec)
    record = method.encode(_update(), None, _ctx()).record
    short = Arrays({k: v for k, v in record.items() if k != "item_bias.weight"})
    with pytest.raises(PayloadError, match="item_bias.weight"):
        method.decode(short, SHAPES, _ctx())


@pytest.mark.parametrize("value_codec", ["fp32", "int8"])
@pytest.mark.parametrize("name", METHODS)
def test_an_undecodable_tensor_is_a_payload_error(name, value_codec):
    method = _method(name, value_codec=value_codec)
    record = method.encode(_update(), None, _ctx()).record
    for garbage in (np.arange(7, dtype=np.uint8), np.ones(3, np.float64), np.ones((50, 1), np.int32)):
        arrays = dict(record.items())
        arrays["item_bias.weight"] = npy_array(garbage)
        with pytest.raises(PayloadError):
            method.decode(Arrays(arrays), SHAPES, _ctx())


@pytest.mark.parametrize("value_codec", ["fp32", "int8"])
@pytest.mark.parametrize("name", METHODS)
def test_a_non_finite_value_is_a_payload_error(name, value_codec):
    """A plain array with a NaN, or a codec payload whose float32 value is NaN."""
    method = _method(name, value_codec=value_codec)
    record = method.encode(_update(), None, _ctx()).record
    tensor = "mlp.0.bias"
    arrays = dict(record.items())
    if arrays[tensor].dtype == "uint8":
        payload = bytearray(encode(np.arange(3), np.ones(3, np.float32), (3,), value_codec="fp32"))
        payload[-4:] = np.float32(np.nan).tobytes()  # the last value of the fp32 stream
        arrays[tensor] = npy_array(np.frombuffer(bytes(payload), dtype=np.uint8))
    else:
        arrays[tensor] = npy_array(np.array([1.0, np.nan, 2.0], np.float32))
    with pytest.raises(PayloadError):
        method.decode(Arrays(arrays), SHAPES, _ctx())


@pytest.mark.parametrize("name", METHODS)
def test_the_payload_of_another_tensor_is_a_payload_error(name):
    """Two tensors' payloads swapped: each is well formed, neither fits."""
    method = _method(name, value_codec="int8")
    record = method.encode(_update(), None, _ctx()).record
    arrays = dict(record.items())
    arrays["mlp.0.weight"], arrays["item_bias.weight"] = arrays["item_bias.weight"], arrays["mlp.0.weight"]
    with pytest.raises(PayloadError):
        method.decode(Arrays(arrays), SHAPES, _ctx())


# --------------------------------------------------- particular methods
def _delta(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(50, 4)).astype(np.float32) * (rng.random((50, 1)) < 0.3)
    return {"item_embedding.weight": items, "item_bias.weight": rng.normal(size=(50, 1)).astype(np.float32)}


SHAPES_DELTA = {name: value.shape for name, value in _delta().items()}


def test_dense_baseline_sends_float32_arrays():
    cfg = Config()
    assert (cfg.compression.prune_method, cfg.compression.value_codec) == ("none", "fp32")
    encoded = UPLINK.get("none")(cfg.compression).encode(_delta(), None, _ctx())
    sent = from_record(encoded.record)
    for name, value in _delta().items():
        assert sent[name].dtype == np.float32
        np.testing.assert_array_equal(sent[name], value)
    assert encoded.state == {} and encoded.density == 1.0


def test_topk_sends_ceil_density_entries_per_tensor():
    encoded = _method("topk", density=0.1).encode(_delta(), None, _ctx())
    assert encoded.nnz == sum(int(np.ceil(0.1 * v.size)) for v in _delta().values())


def test_density_warm_up_starts_dense():
    method = _method("topk", density=0.01, density_warmup_rounds=2)
    first, third = method.encode(_delta(), None, _ctx(1)), method.encode(_delta(), None, _ctx(3))
    assert first.density == density_at(1, 0.01, 2) == 1.0
    assert first.nnz == sum(int(np.count_nonzero(v)) for v in _delta().values())
    assert third.density == 0.01


def test_residual_is_added_to_the_next_update_at_the_current_learning_rate():
    """As the client runs it: the round's rate from the config's schedule."""
    cfg = Config.of(prune_method="topk", density=0.05, rounds=10, local_lr=4.0, local_lr_final=1.0)
    method = UPLINK.get("topk")(cfg.compression)
    lr1, lr5 = cfg.local_lr_at(1), cfg.local_lr_at(5)
    assert lr1 != lr5
    first = method.encode(_delta(1), None, _ctx(1, 3, lr=lr1))
    second = method.encode(_delta(2), first.state, _ctx(5, 3, lr=lr5))
    sent1, kept1 = densify(method.decode(first.record, SHAPES_DELTA, _ctx(1, 3))), _kept(first)
    for name in sent1:  # stored per unit of learning rate
        np.testing.assert_allclose(sent1[name] + lr1 * kept1[name], _delta(1)[name], atol=1e-5)
    sent2, kept2 = densify(method.decode(second.record, SHAPES_DELTA, _ctx(5, 3))), _kept(second)
    for name in sent2:
        corrected = _delta(2)[name] + lr5 * kept1[name]
        np.testing.assert_allclose(sent2[name] + lr5 * kept2[name], corrected, atol=1e-5)



def test_randomk_is_seeded_by_seed_round_and_partition():
    method = _method("randomk", density=0.2)

    def chosen(ctx: RoundContext) -> list[np.ndarray]:
        return [t.indices for t in method.decode(method.encode(_delta(), None, ctx).record, SHAPES_DELTA, ctx).values()]

    same = chosen(_ctx(1, 0, seed=0)), chosen(_ctx(1, 0, seed=0))
    assert all(np.array_equal(a, b) for a, b in zip(*same))
    for other in (_ctx(1, 0, seed=1), _ctx(2, 0, seed=0), _ctx(1, 1, seed=0)):
        assert not all(np.array_equal(a, b) for a, b in zip(same[0], chosen(other)))


@pytest.mark.parametrize("lr", [1.0, 2.5])
@pytest.mark.parametrize("name", METHODS)
def test_with_a_partial_broadcast_the_residual_of_rows_not_sent_is_held_back(name, lr):
    """A client sent some item rows only may update only those; what error
    feedback carries for the other rows waits, unchanged, for a later round."""
    method = _method(name, value_codec="int8", error_feedback=True)
    first = method.encode(_update(1), None, _ctx(1, 3, lr=lr))
    kept1 = _kept(first)
    rows = {"item_embedding.weight": np.arange(0, 50, 2), "item_bias.weight": np.arange(0, 50, 2)}
    update = _update(2)
    for tensor, ids in rows.items():  # the client trained on the rows it got only
        outside = np.ones(50, bool)
        outside[ids] = False
        update[tensor][outside] = 0.0
    ctx = RoundContext(server_round=2, partition_id=3, seed=0, lr=lr, rows=rows)
    second = method.encode(update, from_record(to_record(first.state)), ctx)
    sent, kept2 = densify(method.decode(second.record, SHAPES, ctx)), _kept(second)
    for tensor, ids in rows.items():
        outside = np.setdiff1d(np.arange(50), ids)
        assert not sent[tensor][outside].any()
        if tensor in kept1:
            np.testing.assert_array_equal(kept2[tensor][outside], kept1[tensor][outside])


@pytest.mark.parametrize("name", METHODS)
def test_an_owed_amount_comes_out_of_the_residual_per_unit_of_learning_rate(name):
    """`fill-repay`: what a client added (decoys) is owed back; after `owe`
    the residual is the method's own less the amount, at the round's rate."""
    method, lr = _method(name, value_codec="int8"), 2.0
    encoded = method.encode(_update(), None, _ctx(lr=lr))
    owed = {"item_embedding.weight": np.zeros((50, 4), np.float32)}
    owed["item_embedding.weight"][[3, 7]] = 0.5
    after = residual_from_state(owe(encoded.state, owed, lr))
    before = _kept(encoded)
    zero = np.zeros((50, 4), np.float32)
    np.testing.assert_allclose(after["item_embedding.weight"],
                               before.get("item_embedding.weight", zero) - owed["item_embedding.weight"] / lr)
    for tensor in set(before) - {"item_embedding.weight"}:
        np.testing.assert_array_equal(after[tensor], before[tensor])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
              elements=st.sampled_from([0.0, -0.0, 1.5, -2.25, 3e-38, np.inf])))
def test_the_residual_state_restores_the_residual_bit_for_bit(value):
    """Kept as its non-zero rows: every row with any non-zero entry (-0.0 counts) comes back exactly."""
    back = residual_from_state(residual_to_state({"t": value}))["t"]
    assert back.dtype == np.float32 and back.shape == value.shape and back.tobytes() == value.tobytes()


def test_a_residual_with_most_rows_non_zero_is_kept_whole_and_carried_alike():
    """Mostly non-zero: the tensor whole, no row ids; mostly zero: its rows.
    Either way the next update carries the same corrected values."""
    from prunus.common.compression.sparse import WHOLE_SHARE, carry

    rng = np.random.default_rng(1)
    full = rng.normal(size=(40, 3)).astype(np.float32)
    few = np.where((np.arange(40) < int(WHOLE_SHARE * 40) - 1)[:, None], full, np.float32(0))
    state = residual_to_state({"full": full, "few": few}, lr=0.5)
    assert "full.rows" not in state and state["full.val"].shape == (40, 3)
    assert len(state["few.rows"]) == int(WHOLE_SHARE * 40) - 1
    update = {"full": rng.normal(size=(40, 3)).astype(np.float32), "few": np.zeros((40, 3), np.float32)}
    corrected, held = carry(update, from_record(to_record(state), writable=False), _ctx(lr=0.25))
    assert not held
    for name, residual in (("full", full), ("few", few)):
        expected = update[name] + (residual / np.float32(0.5)) * np.float32(0.25)
        np.testing.assert_array_equal(corrected[name], expected)


def test_lowrank_with_the_model_basis_projects_onto_the_factor_the_message_carried():
    from prunus.common.compression.uplink.lowrank import basis_content, read_basis

    method = _method("lowrank", rank=2, rank_basis="model", value_codec="fp32", error_feedback=False)
    model = {name: np.random.default_rng(3).normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}
    basis = method.round_basis(model, 0, 1)
    assert sorted(basis) == ["item_embedding.weight", "mlp.0.weight", "output.weight"]  # wider than the rank
    carried = read_basis(basis_content(basis), SHAPES)
    ctx = RoundContext(server_round=1, partition_id=0, seed=0, basis=carried)
    update = _update()
    decoded = method.decode(method.encode(update, None, ctx).record, SHAPES, ctx)
    q = basis["item_embedding.weight"]
    np.testing.assert_allclose(to_dense(decoded["item_embedding.weight"]), update["item_embedding.weight"] @ q @ q.T,
                               atol=1e-5)
    assert method.round_basis(model, 0, 1)["item_embedding.weight"].tobytes() == q.tobytes()  # a function of the model


def test_an_explored_model_basis_keeps_the_top_directions_and_draws_the_rest_outside_them_each_round():
    from prunus.common.compression.uplink.lowrank import model_basis

    method = _method("lowrank", rank=3, rank_basis="model", rank_explore=2, value_codec="fp32", error_feedback=False)
    model = {name: np.random.default_rng(3).normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}
    name = "item_embedding.weight"
    basis, again, later = (method.round_basis(model, 0, r)[name] for r in (1, 1, 2))
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-5)  # orthonormal
    top = model_basis(model[name], 1)
    np.testing.assert_allclose(basis[:, :1], top)  # the model's top direction first
    np.testing.assert_allclose(top.T @ basis[:, 1:], 0, atol=1e-5)  # the explored two outside it
    assert basis.tobytes() == again.tobytes()  # a function of (model, seed, round)
    assert not np.allclose(basis[:, 1:], later[:, 1:])  # a new draw each round


@pytest.mark.parametrize("options", [{"rank": 4, "rank_explore": 1}, {"rank": 4, "rank_basis": "model", "rank_explore": 4}])
def test_rank_explore_needs_the_model_basis_and_a_rank_above_it(options):
    from prunus.common.compression.uplink.lowrank import LowRankOptions
    from prunus.common.config import ConfigError

    with pytest.raises(ConfigError, match="rank-explore"):
        LowRankOptions(**options)


@pytest.mark.parametrize("bad", [{"item_embedding.weight": np.zeros((3, 2), np.float32)},
                                 {"item_embedding.weight": np.eye(4, dtype=np.float32)},
                                 {"item_embedding.weight": np.full((4, 2), np.nan, np.float32)},
                                 {"item_bias.weight": np.zeros((1, 2), np.float32)},
                                 {"item_embedding.weight": np.zeros((4, 2), np.float64)}])
def test_a_message_basis_of_the_wrong_tables_shape_type_or_values_is_a_payload_error(bad):
    from prunus.common.compression.uplink.lowrank import basis_content, read_basis

    shapes = {"item_embedding.weight": (50, 4), "item_bias.weight": (50, 1)}
    with pytest.raises(PayloadError, match="basis"):
        read_basis(basis_content(bad), shapes)
    assert read_basis({}, shapes) is None


def test_a_client_factor_carries_an_update_along_one_direction_whole():
    """An MF client's item rows all move along its user vector: rank 1 of its
    own factor sends that update, and the residual keeps almost nothing."""
    from prunus.common.compression.uplink.lowrank import FACTOR

    rng = np.random.default_rng(4)
    update = _update()
    touched = rng.random((50, 1)) < 0.3
    update["item_embedding.weight"] = (rng.normal(size=(50, 1)) * touched * rng.normal(size=4)).astype(np.float32)
    method = _method("lowrank:client", rank=1, value_codec="fp32", error_feedback=True)
    encoded = method.encode(update, None, _ctx())
    assert read_header(record_payload("item_embedding.weight" + FACTOR,
                                      encoded.record["item_embedding.weight" + FACTOR])).shape == (4, 1)
    decoded = method.decode(encoded.record, SHAPES, _ctx())
    np.testing.assert_allclose(to_dense(decoded["item_embedding.weight"]), update["item_embedding.weight"], atol=1e-5)
    assert np.abs(_kept(encoded)["item_embedding.weight"]).max() < 1e-5


def test_row_scales_carry_the_pull_toward_each_received_row_that_no_factor_holds():
    """An MF client's rows move along its user vector and, by the L2 penalty,
    toward zero along themselves: rank 1 with row scales sends both, and what
    the server lifts with its copy of the received rows is what the client
    keeps out of its residual."""
    from prunus.common.compression.uplink.lowrank import ROW_SCALE

    rng = np.random.default_rng(5)
    received = {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}
    update = _update()
    touched = rng.random((50, 1)) < 0.3
    pull = -0.01 * rng.random((50, 1)) * received["item_embedding.weight"]
    update["item_embedding.weight"] = ((rng.normal(size=(50, 1)) * rng.normal(size=4) + pull) * touched).astype(np.float32)
    ctx = RoundContext(server_round=1, partition_id=0, seed=0, model=received)
    missed = {}
    for scaled in (False, True):
        method = _method("lowrank:client-rows" if scaled else "lowrank:client", rank=1, value_codec="fp32",
                         error_feedback=True)
        encoded = method.encode(update, None, ctx)
        assert (("item_embedding.weight" + ROW_SCALE) in encoded.record) == scaled
        sent = to_dense(method.decode(encoded.record, SHAPES, ctx)["item_embedding.weight"])
        kept = _kept(encoded)["item_embedding.weight"]
        missed[scaled] = np.abs(update["item_embedding.weight"] - sent).max()
        _reconstructs(sent, kept, 1.0, update["item_embedding.weight"])
    assert missed[True] < missed[False] / 10  # rank 1 alone drops the pull; the factor leans toward it a little
    with pytest.raises(ValueError, match="model"):  # a server that did not say what it sent cannot lift them
        method.decode(encoded.record, SHAPES, _ctx())
    with pytest.raises(PayloadError):  # a reply without its row scales
        method.decode(Arrays({k: v for k, v in encoded.record.items() if ROW_SCALE not in k}), SHAPES, ctx)


@pytest.mark.parametrize("change", ["missing", "transposed", "non-finite"])
def test_a_reply_whose_own_factor_is_missing_or_does_not_fit_is_a_payload_error(change):
    from prunus.common.compression.uplink.lowrank import FACTOR

    method = _method("lowrank:client", rank=2, value_codec="fp32")
    arrays = dict(method.encode(_update(), None, _ctx()).record.items())
    name = "item_embedding.weight" + FACTOR
    if change == "missing":
        del arrays[name]
    else:
        shape = (2, 4) if change == "transposed" else (4, 2)
        payload = bytearray(encode(np.arange(8), np.ones(8, np.float32), shape, value_codec="fp32"))
        if change == "non-finite":
            payload[-4:] = np.float32(np.inf).tobytes()  # the last value of the fp32 stream
        arrays[name] = npy_array(np.frombuffer(bytes(payload), dtype=np.uint8))
    with pytest.raises(PayloadError):
        method.decode(Arrays(arrays), SHAPES, _ctx())


def test_lowrank_and_threshold_take_their_settings_from_their_own_sections():
    lowrank = _method("lowrank", rank=2)
    assert lowrank.options == LowRankOptions(rank=2)
    record = lowrank.encode(_update(), None, _ctx()).record
    assert read_header(record_payload("item_embedding.weight", record["item_embedding.weight"])).shape == (50, 2)
    assert _method("threshold", prune_threshold=0.25).spec.threshold == 0.25
    assert _method("threshold", prune_threshold=100.0).encode(_update(), None, _ctx()).nnz == 0
    assert _method("topk", prune_threshold=100.0).spec.threshold == 0.0  # not topk's setting


@pytest.mark.parametrize("scale", [1e30, 2.0, 0.5])
def test_a_message_basis_whose_columns_are_not_orthonormal_is_a_payload_error(scale):
    """A finite basis of any other scale was taken: the client projected with it and
    kept `corrected - A Q^T` as its residual, which then grew without bound until
    its own codec refused it (a crash of the client in a later round, not this
    message's error)."""
    from prunus.common.compression.uplink.lowrank import basis_content, model_basis, read_basis

    shapes = {"item_embedding.weight": (50, 4), "item_bias.weight": (50, 1)}
    q = model_basis(np.random.default_rng(0).normal(size=(50, 4)), 2)
    assert read_basis(basis_content({"item_embedding.weight": q}), shapes) is not None
    with pytest.raises(PayloadError, match="orthonormal"):
        read_basis(basis_content({"item_embedding.weight": q * np.float32(scale)}), shapes)


def test_a_message_basis_naming_tensors_the_model_lacks_is_refused_before_any_array_is_read(monkeypatch):
    """read_basis read every array of the record first: 5,000 extra copies of the
    factor cost a client 0.75 s before it learnt they were no tables of its model."""
    from prunus.common.compression.uplink import lowrank
    from prunus.common.compression.uplink.lowrank import basis_content, model_basis, read_basis

    shapes = {"item_embedding.weight": (50, 4), "item_bias.weight": (50, 1)}
    q = model_basis(np.random.default_rng(0).normal(size=(50, 4)), 2)
    extra = basis_content({"item_embedding.weight": q, **{f"extra-{i}": q for i in range(100)}})
    monkeypatch.setattr(lowrank, "array_of", lambda *args, **kwargs: pytest.fail("an array was read"))
    with pytest.raises(PayloadError, match="extra-0"):
        read_basis(extra, shapes)
