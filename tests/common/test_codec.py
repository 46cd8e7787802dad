"""Tests for common.codec: round trips, error bounds, hostile payloads, records."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunus.common.codec import (
    INDEX_CODECS,
    CodecError,
    decode,
    encode,
    max_abs_error,
    pack_update,
    payload_nbytes,
    read_header,
    unpack_update,
)
from prunus.common.codec_index import choose_auto, expected_stream_bounds, pack_fields, stream_size, unpack_fields
from prunus.common.codec_values import VALUE_CODECS, decode_values, encode_values, round_trip
from prunus.common.params import wire_bytes

INDEX = sorted(INDEX_CODECS)
VALUE = sorted(VALUE_CODECS)
FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- helpers
@st.composite
def sparse_tensors(draw, max_dim=12):
    """(indices, values, shape) with unsorted unique indices, mixed dtypes."""
    shape = tuple(draw(st.lists(st.integers(1, max_dim), min_size=1, max_size=3)))
    n = math.prod(shape)
    mode = draw(st.sampled_from(["empty", "full", "one", "random", "random"]))
    nnz = {"empty": 0, "full": n, "one": min(1, n)}.get(mode) \
        if mode != "random" else draw(st.integers(0, n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    idx = rng.choice(n, size=nnz, replace=False)
    idx = idx.astype(draw(st.sampled_from([np.int32, np.int64])))
    scale = 10.0 ** draw(st.floats(-9, 3))
    vals = rng.standard_normal(nnz) * scale
    if nnz and draw(st.booleans()):  # sprinkle exact zeros and negative zeros
        vals[rng.random(nnz) < 0.3] = 0.0
        vals[rng.random(nnz) < 0.1] = -0.0
    vals = vals.astype(draw(st.sampled_from([np.float16, np.float32, np.float64])))
    return idx, vals, shape


def check_well_formed(result, n_limit=None):
    idx, val, shape = result
    assert isinstance(shape, tuple) and all(isinstance(d, int) and d >= 1 for d in shape)
    n = math.prod(shape)
    assert idx.dtype == np.int64 and idx.ndim == 1
    assert val.dtype == np.float32 and val.ndim == 1 and len(val) == len(idx)
    assert np.isfinite(val).all()
    if len(idx):
        assert idx[0] >= 0 and idx[-1] < n
        assert np.all(np.diff(idx) > 0)


def check_round_trip(idx, vals, shape, ic, vc):
    payload = encode(idx, vals, shape, index_codec=ic, value_codec=vc)
    out = decode(payload)
    check_well_formed(out)
    d_idx, d_val, d_shape = out
    order = np.argsort(idx, kind="stable")
    assert d_shape == tuple(shape)
    assert np.array_equal(d_idx, idx[order].astype(np.int64))
    ref = vals[order].astype(np.float64)
    err = np.abs(d_val.astype(np.float64) - ref).max(initial=0.0)
    bound = max_abs_error(vals, vc)
    assert err <= bound, (ic, vc, err, bound)
    if vc == "fp32" and vals.dtype != np.float64:
        assert np.array_equal(d_val, vals[order].astype(np.float32))
    return payload


# -------------------------------------------------------------- round trips
@pytest.mark.parametrize("vc", VALUE)
@pytest.mark.parametrize("ic", INDEX + ["auto"])
@FAST
@given(t=sparse_tensors())
def test_round_trip(ic, vc, t):
    check_round_trip(*t, ic, vc)


@pytest.mark.parametrize("ic", INDEX)
def test_round_trip_larger(ic):
    rng = np.random.default_rng(1)
    for n, k in [(237_184, 237), (237_184, 23_718), (50_000, 50_000), (1, 1), (1, 0)]:
        idx = rng.choice(n, size=k, replace=False)
        vals = rng.standard_normal(k).astype(np.float32)
        check_round_trip(idx, vals, (n,), ic, "fp32")


def test_extreme_positions_and_shapes():
    shape = (2**31, 2**31)  # n = 2^62: only sparse codecs are viable
    idx = np.array([0, 5, 2**62 - 1, 2**40], dtype=np.int64)
    vals = np.array([1, -2, 3, 4], dtype=np.float32)
    for ic in ("delta-varint", "rice", "elias-fano", "auto"):
        check_round_trip(idx, vals, shape, ic, "fp32")
    out = decode(encode([], [], ()))  # scalar tensor, n = 1
    assert out[2] == () and len(out[0]) == 0


@FAST
@given(t=sparse_tensors(max_dim=40), vc=st.sampled_from(VALUE))
def test_auto_is_never_larger(t, vc):
    sizes = {ic: len(encode(*t, index_codec=ic, value_codec=vc)) for ic in INDEX}
    assert len(encode(*t, value_codec=vc)) == min(sizes.values())


@FAST
@given(t=sparse_tensors(max_dim=40))
def test_auto_is_the_smallest_stream_with_ties_to_the_cheapest_decode(t):
    idx = np.unique(np.asarray(t[0], dtype=np.int64))
    n = math.prod(t[2])
    sizes = {c: stream_size(c, idx, n)[1] for c in ("bitmap", "elias-fano", "rice", "delta-varint")}
    codec, param = choose_auto(idx, n)
    assert codec == min(sizes, key=lambda c: (sizes[c], list(sizes).index(c)))
    assert (param, sizes[codec]) == stream_size(codec, idx, n)


@FAST
@given(width=st.integers(0, 62), values=st.lists(st.integers(0, 2**62 - 1), max_size=40))
def test_fields_pack_low_bits_lsb_first(width, values):
    vals = np.array(values, dtype=np.uint64) & np.uint64((1 << width) - 1)
    bits = [(int(v) >> j) & 1 for v in vals for j in range(width)]
    packed = pack_fields(vals, width)
    assert packed == np.packbits(np.array(bits, dtype=np.uint8), bitorder="little").tobytes()
    assert (unpack_fields(np.frombuffer(packed, np.uint8), len(vals), width) == vals).all()


@FAST
@given(vc=st.sampled_from(VALUE),
       values=st.lists(st.floats(-6e4, 6e4, width=32), max_size=30))
def test_round_trip_is_what_the_receiver_decodes(vc, values):
    v = np.array(values, dtype=np.float32)
    stream = np.frombuffer(encode_values(vc, v), dtype=np.uint8)
    expected = decode_values(VALUE_CODECS[vc], stream, len(v))
    assert round_trip(vc, v).tobytes() == expected.tobytes()


def test_auto_near_entropy_floor():
    rng = np.random.default_rng(2)
    n = 237_184
    for density in (0.001, 0.01, 0.1):
        k = int(n * density)
        idx = rng.choice(n, size=k, replace=False)
        info = read_header(encode(idx, np.ones(k), (n,)))
        floor = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) \
            / math.log(2) / k
        assert info.index_nbytes * 8 / k <= 1.10 * floor, (density, info)


def test_value_codec_edge_cases():
    v = np.array([65504.0, -65504.0, 2.0**-24, -(2.0**-20), 0.0, 1e-30])
    check_round_trip(np.arange(6), v, (6,), "auto", "fp16")
    with pytest.raises(ValueError, match="float16"):
        encode([0], [65520.0], (1,), value_codec="fp16")
    for vc in ("int8", "ternary"):  # all-zero and tiny tensors
        check_round_trip(np.arange(3), np.zeros(3), (3,), "auto", vc)
        check_round_trip(np.arange(3), np.array([1e-45, -1e-45, 0]), (3,), "auto", vc)
    t = decode(encode([0, 1, 2], [3.0, -1.0, 0.0], (3,), value_codec="ternary"))[1]
    m = np.float32(4.0 / 3)
    assert np.array_equal(t, np.array([m, -m, m], dtype=np.float32))
    big = np.array([3.4e38, -3.4e38, 1.0])
    for vc in ("fp32", "int8", "ternary"):
        check_round_trip(np.arange(3), big, (3,), "auto", vc)


# ------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("args, match", [
    (([1, 1], [1.0, 2.0], (4,)), "duplicate"),
    (([3, 1, 3], [1.0, 2.0, 3.0], (4,)), "duplicate"),
    (([4], [1.0], (4,)), "out of range"),
    (([-1], [1.0], (4,)), "out of range"),
    (([1, 2], [1.0], (4,)), "mismatched"),
    (([1], [np.nan], (4,)), "finite"),
    (([1], [np.inf], (4,)), "finite"),
    (([1], [1e39], (4,)), "float32"),
    (([1.0], [1.0], (4,)), "integers"),
    (([[1]], [[1.0]], (4,)), "1-D"),
    (([0], [1.0], (0, 4)), "positive"),
    (([0], [1.0], (2**32, 2**32)), "2\\^63"),
    (([0], [1.0], "ab"), "shape"),
    (([0], ["x"], (4,)), "real"),
])
def test_encode_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        encode(*args)


def test_encode_rejects_unknown_codecs():
    with pytest.raises(ValueError, match="index codec"):
        encode([0], [1.0], (1,), index_codec="zip")
    with pytest.raises(ValueError, match="value codec"):
        encode([0], [1.0], (1,), value_codec="bf16")


# -------------------------------------------------------- hostile payloads
def _samples():
    rng = np.random.default_rng(3)
    out = []
    for ic in INDEX:
        for vc in VALUE:
            n = 300
            idx = rng.choice(n, size=int(rng.integers(1, 60)), replace=False)
            vals = rng.standard_normal(len(idx))
            out.append(encode(idx, vals, (20, 15), index_codec=ic, value_codec=vc))
    return out


SAMPLES = _samples()


def _decode_is_safe(data):
    try:
        result = decode(data)
    except CodecError:
        return False
    check_well_formed(result)
    return True


def test_every_prefix_is_rejected():
    for payload in SAMPLES:
        for cut in range(len(payload)):
            with pytest.raises(CodecError):
                decode(payload[:cut])


def test_decode_rejects_wrong_type():
    with pytest.raises(TypeError):
        decode("not bytes")  # type: ignore[arg-type]


@FUZZ
@given(data=st.data())
def test_mutated_payloads_never_crash(data):
    payload = bytearray(data.draw(st.sampled_from(SAMPLES)))
    kind = data.draw(st.sampled_from(["cut", "byte", "bit", "header-bit", "append", "multi"]))
    if kind == "cut":
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    elif kind == "append":
        payload += data.draw(st.binary(min_size=1, max_size=16))
    elif kind in ("byte", "bit", "header-bit"):
        hi = 49 if kind == "header-bit" else len(payload) - 1
        pos = data.draw(st.integers(0, hi))
        if kind == "byte":
            payload[pos] = data.draw(st.integers(0, 255))
        else:
            payload[pos] ^= 1 << data.draw(st.integers(0, 7))
    else:
        for _ in range(data.draw(st.integers(2, 6))):
            pos = data.draw(st.integers(0, len(payload) - 1))
            payload[pos] = data.draw(st.integers(0, 255))
    ok = _decode_is_safe(bytes(payload))
    if kind in ("cut", "append"):
        assert not ok


@FUZZ
@given(ic=st.sampled_from(sorted(INDEX_CODECS.values())),
       vc=st.sampled_from(sorted(VALUE_CODECS.values())),
       param=st.integers(0, 10), dims=st.lists(st.integers(1, 40), min_size=1, max_size=2),
       nnz_frac=st.floats(0, 1), slack=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_random_streams_with_valid_header_never_crash(ic, vc, param, dims, nnz_frac,
                                                      slack, seed):
    """Headers that pass the length checks, followed by random stream bytes:
    exercises the deep (content) validation of every codec."""
    if ic in (1, 2):
        param = 0
    n = math.prod(dims)
    nnz = int(nnz_frac * n)
    lo, hi = expected_stream_bounds(ic, param, n, nnz)
    ilen = min(hi, lo + slack)
    vlen = {1: 4 * nnz, 2: 2 * nnz, 3: 4 + nnz, 4: 4 + (nnz + 7) // 8}[vc]
    rng = np.random.default_rng(seed)
    head = struct.pack("<4sBBBBB", b"PRSP", 1, ic, vc, param, len(dims))
    head += struct.pack(f"<{len(dims)}QQQQ", *dims, nnz, ilen, vlen)
    streams = rng.integers(0, 256, ilen + vlen, dtype=np.uint8)
    if vc in (1, 2) and rng.random() < 0.7:  # mostly finite values
        streams[ilen:] = 0
    _decode_is_safe(head + streams.tobytes())


@pytest.mark.parametrize("nnz, ilen, vlen, dims", [
    (2**40, 2**40, 2**42, (2**62,)),          # huge claims, tiny payload
    (2**63, 0, 0, (2**63 - 1,)),              # nnz > n
    (1, 0, 4, (2**32, 2**32)),                # n overflows int64
    (3, 2**64 - 1, 12, (10,)),                # lengths wrap
    (1, 0, 4, (0,)),                          # zero dim
])
def test_resource_bomb_headers(nnz, ilen, vlen, dims):
    head = struct.pack("<4sBBBBB", b"PRSP", 1, 1, 1, 0, len(dims))
    head += struct.pack(f"<{len(dims)}QQQQ", *dims, nnz, ilen, vlen)
    with pytest.raises(CodecError):
        decode(head + b"\0" * 64)


def _raw(ic, vc, param, dims, nnz, istream, vstream):
    head = struct.pack("<4sBBBBB", b"PRSP", 1, ic, vc, param, len(dims))
    head += struct.pack(f"<{len(dims)}QQQQ", *dims, nnz, len(istream), len(vstream))
    return head + istream + vstream


ONE = struct.pack("<f", 1.0)


@pytest.mark.parametrize("payload, match", [
    (_raw(2, 1, 0, (16,), 1, b"\x81\x00", ONE), "overlong"),
    (_raw(2, 1, 0, (2**62,), 2, b"\x81" * 9 + b"\x01\x00", ONE * 2), "longer than 9"),
    (_raw(2, 1, 0, (16,), 1, b"\x10", ONE), "out of range"),
    (_raw(2, 1, 0, (16,), 2, b"\x01\x81", ONE * 2), "holds 1 values"),
    (_raw(1, 1, 0, (12,), 1, b"\x02\x80", ONE), "padding"),
    (_raw(1, 1, 0, (12,), 1, b"\x03\x00", ONE), "popcount"),
    (_raw(3, 1, 0, (16,), 1, b"\x01\x00", ONE), "trailing zero"),
    (_raw(3, 1, 1, (16,), 2, b"\x06\x03", ONE * 2), "padding"),
    # Elias-Fano, l=1, n=8: idx 3 then 2 (same high part, low bits 1 then 0)
    (_raw(4, 1, 1, (8,), 2, b"\x01\x06", ONE * 2), "strictly increasing"),
    (_raw(1, 3, 0, (8,), 1, b"\x01", ONE + b"\x80"), "-128"),
    (_raw(1, 3, 0, (8,), 1, b"\x01", struct.pack("<f", -1.0) + b"\x01"), "negative"),
    (_raw(1, 4, 0, (8,), 1, b"\x01", ONE + b"\x02"), "padding"),
    (_raw(1, 1, 0, (8,), 1, b"\x01", struct.pack("<f", float("nan"))), "finite"),
    (_raw(1, 1, 0, (8,), 9, b"\x01", ONE * 9), "exceeds tensor size"),
    (_raw(1, 1, 1, (8,), 1, b"\x01", ONE), "parameter"),
    (_raw(3, 1, 63, (8,), 1, b"\x01", ONE), "parameter"),
    (_raw(1, 1, 0, (8,), 1, b"\x01", ONE)[:-1] + b"\x00\x00", "inconsistent"),
    (_raw(1, 1, 0, (8,) * 65, 1, b"", b""), "ndim"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_specific_malformations(payload, match):
    with pytest.raises(CodecError, match=match):
        decode(payload)


def test_raw_builder_matches_encoder():
    assert _raw(2, 1, 0, (16,), 1, b"\x03", ONE) == encode([3], [1.0], (16,),
                                                            index_codec="delta-varint")
    good = encode([1, 5, 9], [1.0, 2.0, 3.0], (16,))
    for bad, match in [(b"XXXX" + good[4:], "magic"), (good[:4] + b"\x02" + good[5:], "version"),
                       (good[:5] + b"\x09" + good[6:], "index codec id"),
                       (good[:6] + b"\x00" + good[7:], "value codec id"),
                       (good + b"\0", "inconsistent")]:
        with pytest.raises(CodecError, match=match):
            decode(bad)


def test_large_tensor_decode_is_fast():
    import time

    rng = np.random.default_rng(5)
    n = 10_000_000
    for density in (0.001, 0.01, 0.1):
        k = int(n * density)
        idx = rng.choice(n, size=k, replace=False)
        vals = rng.standard_normal(k).astype(np.float32)
        payload = encode(idx, vals, (n,))
        t0 = time.perf_counter()
        d_idx, d_val, _ = decode(payload)
        elapsed = time.perf_counter() - t0
        assert np.array_equal(d_idx, np.sort(idx))
        if density == 0.01:
            assert elapsed < 1.0
        info = read_header(payload)
        floor = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) \
            / math.log(2) / k
        assert info.index_nbytes * 8 / k <= 1.10 * floor


# --------------------------------------------------------- Flower records
def _update():
    rng = np.random.default_rng(4)
    out = {}
    for name, shape in [("emb.weight", (500, 16)), ("fc.bias", (16,)), ("empty", (3, 3))]:
        n = math.prod(shape)
        k = 0 if name == "empty" else n // 10
        out[name] = (rng.choice(n, size=k, replace=False),
                     rng.standard_normal(k).astype(np.float32), shape)
    return out


def _assert_same(update, got):
    assert set(got) == set(update)
    for name, (idx, vals, shape) in update.items():
        order = np.argsort(idx)
        g_idx, g_val, g_shape = got[name]
        assert g_shape == shape
        assert np.array_equal(g_idx, idx[order]) and np.array_equal(g_val, vals[order])


def test_pack_unpack_record():
    from prunus.common.params import npy_array
    from prunus.common.payload import Arrays

    update = _update()
    record = pack_update(update)
    assert isinstance(record, Arrays)
    for arr in record.values():
        assert arr.dtype == "uint8" and len(arr.shape) == 1
    _assert_same(update, unpack_update(record))
    sizes = sum(len(encode(*t)) for t in update.values())
    assert payload_nbytes(record) == sizes
    bad = Arrays({"x": npy_array(np.zeros(3, dtype=np.float32))})
    with pytest.raises(CodecError, match="uint8"):
        unpack_update(bad)
    garbage = Arrays({"x": npy_array(np.zeros(40, dtype=np.uint8))})
    with pytest.raises(CodecError, match="'x'"):
        unpack_update(garbage)
    with pytest.raises(ValueError, match="emb"):
        pack_update({"emb": ([0, 0], [1.0, 1.0], (4,))})


def test_unpack_update_with_shapes_checks_names_and_header_shapes_before_any_stream():
    """With the model's shapes a record's names and each payload's shape are
    checked first: a broadcast's extra or misshapen tensors cost no decoding."""
    from prunus.common.params import npy_array
    from prunus.common.payload import Arrays

    record = pack_update({"a": (np.array([0, 2]), np.array([1.0, 2.0], np.float32), (4,))})
    assert set(unpack_update(record, {"a": (4,)})) == {"a"}
    with pytest.raises(CodecError, match=r"missing \[\], unexpected \['b'\]"):
        unpack_update(Arrays({**record, "b": record["a"]}), {"a": (4,)})
    with pytest.raises(CodecError, match=r"missing \['b'\]"):
        unpack_update(record, {"a": (4,), "b": (4,)})
    damaged = bytearray(record["a"].numpy().tobytes())
    damaged[-1] ^= 0xFF  # a stream byte: decoding it would fail, the shape check comes first
    with pytest.raises(CodecError, match=r"expected shape \(5,\), got \(4,\)"):
        unpack_update(Arrays({"a": npy_array(np.frombuffer(bytes(damaged), np.uint8))}), {"a": (5,)})


def test_record_through_flower_serialisation():
    from flwr.app import RecordDict
    from flwr.common.serde import array_record_from_proto, array_record_to_proto
    from flwr.proto.recorddict_pb2 import ArrayRecord as ProtoArrayRecord
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    from prunus.common.flower_records import from_flower, to_array_record

    update = _update()
    packed = pack_update(update, value_codec="fp16")
    record = to_array_record(packed)
    wire = array_record_to_proto(record).SerializeToString()
    back = from_flower(RecordDict({"r": array_record_from_proto(ProtoArrayRecord.FromString(wire))}))["r"]
    expected = unpack_update(packed)
    for name, (idx, val, shape) in unpack_update(back).items():
        assert np.array_equal(idx, expected[name][0]) and np.array_equal(val, expected[name][1])
    # Flower 1.41 transport: the record is deflated into content-addressed objects
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(record).items()}
    inflated = inflate_object_from_contents(record.object_id, dict(contents))
    assert set(unpack_update(from_flower(RecordDict({"r": inflated}))["r"])) == set(update)
    sent = sum(map(len, contents.values()))
    assert sent == wire_bytes(packed)
    # overhead over the codec payloads: npy header + object headers, per tensor
    assert payload_nbytes(packed) < sent < payload_nbytes(packed) + 600 * len(update)


@given(st.integers(1, 2**40), st.data())
def test_the_elias_fano_parameter_is_the_best_of_every_allowed_one(n, data):
    from prunus.common.codec_index import MAX_PARAM, _ef_size, best_ef_param

    nnz = data.draw(st.integers(1, min(n, 2**20)))
    everywhere = min(((l, _ef_size(nnz, n, l)) for l in range(MAX_PARAM + 1)), key=lambda t: t[1])
    assert best_ef_param(nnz, n) == everywhere
