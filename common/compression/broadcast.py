"""The shared halves of the downlink methods.

`CodecBroadcast`: each tensor's non-zero entries through `common.codec` with
the method's value codec (a pruned model travels as its non-zeros; fp16 and
int8 are lossy and smaller). `RowBlockBroadcast`: each tensor as per-row
scaled low-bit codes (`common.codec_rows`), stochastically rounded with noise
seeded by (seed, round). Either way a client decodes what it was sent and
trains from that, so its update is relative to the model it really has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from prunus.common.codec import CodecError, pack_update, record_payload, unpack_update
from prunus.common.codec_rows import as_rows, pack_rows, quantise_rows, unpack_rows
from prunus.common.compression.base import BroadcastContext, Params, PayloadError, Shapes, take_rows
from prunus.common.params import npy_array, record_of
from prunus.common.payload import Arrays
from prunus.common.update import densify, nonzeros

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


class CodecBroadcast:
    """Base of the downlink methods: non-zeros with the value codec `value_codec`."""

    name: ClassVar[str]
    value_codec: ClassVar[str]

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings

    def encode(self, params: Params, ctx: BroadcastContext) -> Arrays:
        return pack_update({name: nonzeros(value) for name, value in take_rows(params, ctx.rows).items()},
                           index_codec="auto", value_codec=self.value_codec)

    def decode(self, record: Arrays, shapes: Shapes) -> Params:
        try:
            params = densify(unpack_update(record))
        except CodecError as err:
            raise PayloadError(f"undecodable broadcast: {err}") from None
        return check_model(params, shapes)


class RowBlockBroadcast:
    """Base of the sub-8-bit downlink methods: `bits`-bit per-row scaled codes.

    The whole model is quantised once per (model, round) and each message
    gathers its rows from that, so every client of a round decodes the same
    values for a row, whichever rows it asked for.
    """

    name: ClassVar[str]
    bits: ClassVar[int]

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings
        self._cache: tuple[Params, int, int, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None

    def _quantised(self, params: Params, ctx: BroadcastContext) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._cache is None or self._cache[0] is not params or self._cache[1:3] != (ctx.server_round, ctx.seed):
            rng = np.random.default_rng([ctx.seed, ctx.server_round, 7])
            quantised = {}
            for name, value in params.items():
                rows = as_rows(value)
                quantised[name] = quantise_rows(rows, self.bits, rng.random(rows.shape, dtype=np.float32))
            self._cache = (params, ctx.server_round, ctx.seed, quantised)
        return self._cache[3]

    def encode(self, params: Params, ctx: BroadcastContext) -> Arrays:
        arrays = {}
        for name, (scales, codes) in self._quantised(params, ctx).items():
            if ctx.rows is not None and name in ctx.rows:
                scales, codes = scales[ctx.rows[name]], codes[ctx.rows[name]]
            arrays[name] = npy_array(np.frombuffer(pack_rows(scales, codes, self.bits), dtype=np.uint8))
        return record_of(arrays)

    def decode(self, record: Arrays, shapes: Shapes) -> Params:
        if set(record) != set(shapes):
            raise PayloadError(f"broadcast does not match the model: tensors {sorted(set(record) ^ set(shapes))}")
        params = {}
        for name, shape in shapes.items():
            rows, cols = as_rows(np.empty(shape, dtype=np.bool_)).shape
            try:
                params[name] = unpack_rows(record_payload(name, record[name]), rows, cols, self.bits).reshape(shape)
            except CodecError as err:
                raise PayloadError(f"undecodable broadcast: tensor {name!r}: {err}") from None
        return params


def check_model(params: Params, shapes: Shapes) -> Params:
    """The broadcast's tensors are the model's: same names, shapes, float32."""
    if set(params) != set(shapes):
        raise PayloadError(f"broadcast does not match the model: tensors {sorted(set(params) ^ set(shapes))}")
    for name, value in params.items():
        if tuple(value.shape) != tuple(shapes[name]) or value.dtype != np.float32:
            raise PayloadError(f"broadcast tensor {name!r}: expected float32 {shapes[name]}, got {value.dtype} {value.shape}")
    return params
