"""Every registered downlink method: the broadcast a client decodes is the server's model.

Parametrised over `DOWNLINK.names()`, each with the model as it is and with a
pruned model (`model-sparsity`, whose zeros travel as such): the round trip is
exact where the payload is float32 and within the value codec's bound
otherwise, and a broadcast that does not fit the client's model is a
`PayloadError`.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord

from prunus.common.codec import max_abs_error, read_header, record_payload
from prunus.common.compression import DOWNLINK, PayloadError
from prunus.common.config import Config

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


def _codec_of(record: ArrayRecord, name: str) -> str | None:
    """The value codec a tensor's payload says it used (None: a plain float32 array)."""
    array = record[name]
    return read_header(record_payload(name, array)).value_codec if array.dtype == "uint8" else None


@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_the_broadcast_round_trip_reproduces_the_model(name, sparsity):
    params = _params()
    before = {k: v.copy() for k, v in params.items()}
    record = _method(name, sparsity).encode(params)
    assert all(np.array_equal(params[k], before[k]) for k in params)  # the model is not touched
    decoded = _method(name, sparsity).decode(record, SHAPES)  # the client's instance
    assert set(decoded) == set(SHAPES)
    for tensor, value in params.items():
        got = decoded[tensor]
        assert got.shape == value.shape and got.dtype == np.float32
        codec = _codec_of(record, tensor)
        if codec in (None, "fp32"):
            np.testing.assert_array_equal(got, value)
        else:
            bound = max_abs_error(value[value != 0], codec)
            assert np.abs(got.astype(np.float64) - value).max() <= bound
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
    record = method.encode(_params())
    with pytest.raises(PayloadError):
        method.decode(record, BAD_SHAPES[bad])


@pytest.mark.parametrize("sparsity", SPARSITY.values(), ids=list(SPARSITY))
@pytest.mark.parametrize("name", METHODS)
def test_a_broadcast_missing_a_tensor_is_a_payload_error(name, sparsity):
    method = _method(name, sparsity)
    record = method.encode(_params())
    short = ArrayRecord({k: v for k, v in record.items() if k != "item_bias.weight"})
    with pytest.raises(PayloadError):
        method.decode(short, SHAPES)


@pytest.mark.parametrize("name", METHODS)
def test_a_lossy_broadcast_is_smaller(name):
    """Sanity of the registry's choices: every non-fp32 method sends fewer bytes than fp32."""
    from prunus.common.params import wire_bytes

    params = _params()
    size = wire_bytes(_method(name, 0.0).encode(params))
    reference = wire_bytes(_method("fp32", 0.0).encode(params))
    assert size <= reference
