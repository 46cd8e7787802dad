"""The shared halves of the downlink methods.

`CodecBroadcast`: each tensor's non-zero entries through `common.codec` with
the method's value codec (a pruned model travels as its non-zeros; fp16 is
lossy and smaller). `RowBlockBroadcast`: each tensor as per-row scaled codes
(`common.codec_rows`), rounded to the nearest step (int8) or stochastically
with noise seeded by (seed, round) (int4, int2); int8 sends a pruned model's
non-zero codes through `common.codec`, with the row scales beside them
(per tensor, where that is smaller than its row block).
Either way a client decodes what it was sent and trains from that, so its
update is relative to the model it really has.

What a method cannot represent (beyond its `limit`: float16's range, the
largest row scale's Q steps) is clipped to the limit, never a reason for the
model not to travel; `beyond` counts the entries clipped (the server's
`downlink-clipped`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from prunus.common.codec import CodecError, pack_update, record_payload, unpack_update
from prunus.common.codec_deflate import deflate, inflate
from prunus.common.codec_rows import (
    as_rows,
    block_size,
    check_scales,
    dequantise_rows,
    levels,
    pack_rows,
    quantise_rows,
    row_limit,
    unpack_rows,
)
from prunus.common.codec_values import value_limit
from prunus.common.compression.base import BroadcastContext, Params, PayloadError, Shapes, take_rows
from prunus.common.params import array_of, npy_array, record_of
from prunus.common.payload import Arrays
from prunus.common.update import densify, nonzeros

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig

SCALES = "/scales"  # a pruned int8 broadcast's row scales travel under the tensor's name + this


def beyond(params: Params, limit: float) -> int:
    """How many entries of the model lie beyond +-`limit` (infinities included)."""
    return sum(int(np.count_nonzero(np.abs(value) > limit)) for value in params.values())


def clip_model(params: Params, limit: float) -> Params:
    """The model with every entry clipped to +-`limit` (the same dict when none lies beyond)."""
    if not beyond(params, limit):
        return params
    return {name: np.clip(value, -limit, limit).astype(value.dtype, copy=False) for name, value in params.items()}


class CodecBroadcast:
    """Base of the downlink methods: non-zeros with the value codec `value_codec`."""

    name: ClassVar[str]
    value_codec: ClassVar[str]

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings

    @property
    def limit(self) -> float:
        return value_limit(self.value_codec)

    @property
    def lossy(self) -> bool:
        return self.value_codec != "fp32"

    def encode(self, params: Params, ctx: BroadcastContext) -> Arrays:
        sent = take_rows(clip_model(params, self.limit), ctx.rows)
        return pack_update({name: nonzeros(value) for name, value in sent.items()},
                           index_codec="auto", value_codec=self.value_codec)

    def decode(self, record: Arrays, shapes: Shapes) -> Params:
        try:
            params = densify(unpack_update(record, shapes))  # names and shapes checked before any stream
        except CodecError as err:
            raise PayloadError(f"undecodable broadcast: {err}") from None
        return check_model(params, shapes)


class RowBlockBroadcast:
    """Base of the quantised downlink methods: `bits`-bit per-row scaled codes.

    The whole model is quantised once per (model, round) and each message
    gathers its rows from that, so every client of a round decodes the same
    values for a row, whichever rows it asked for. `stochastic`: rounding with
    noise seeded by (seed, round) (unbiased), else to the nearest step (error
    at most half a step). `sparse_when_pruned`: a pruned model's tensor whose
    non-zero codes and row scales (`SCALES`) are smaller than its row block
    travels so, the codes through `common.codec` (exact: integers of at most
    8 bits). `downlink-entropy = "deflate"`: each row block Huffman-coded
    (`common.codec_deflate`), lossless, the same values decoded.
    """

    name: ClassVar[str]
    bits: ClassVar[int]
    stochastic: ClassVar[bool] = True
    sparse_when_pruned: ClassVar[bool] = False
    lossy: ClassVar[bool] = True

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings
        self.sparse = self.sparse_when_pruned and settings.model_sparsity > 0
        self.stochastic = self.stochastic and settings.downlink_rounding == "stochastic"
        self.deflated = settings.downlink_entropy == "deflate"
        self._cache: tuple[Params, int, int, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None

    @property
    def limit(self) -> float:
        return row_limit(self.bits)

    def _quantised(self, params: Params, ctx: BroadcastContext) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._cache is None or self._cache[0] is not params or self._cache[1:3] != (ctx.server_round, ctx.seed):
            rng = np.random.default_rng([ctx.seed, ctx.server_round, 7])
            quantised = {}
            for name, value in clip_model(params, self.limit).items():
                rows = as_rows(value)
                noise = rng.random(rows.shape, dtype=np.float32) if self.stochastic else None
                quantised[name] = quantise_rows(rows, self.bits, noise)
            self._cache = (params, ctx.server_round, ctx.seed, quantised)
        return self._cache[3]

    def encode(self, params: Params, ctx: BroadcastContext) -> Arrays:
        arrays = {}
        for name, (scales, codes) in self._quantised(params, ctx).items():
            if ctx.rows is not None and name in ctx.rows:
                scales, codes = scales[ctx.rows[name]], codes[ctx.rows[name]]
            packed = pack_rows(scales, codes, self.bits)
            block = npy_array(np.frombuffer(deflate(packed) if self.deflated else packed, dtype=np.uint8))
            if self.sparse:  # the non-zero codes with their positions, where that is smaller
                steps = codes.astype(np.float32) - levels(self.bits)
                sparse = {**pack_update({name: nonzeros(steps)}, value_codec="int8"),
                          name + SCALES: npy_array(scales.astype("<f2"))}
                if sum(len(a.data) for a in sparse.values()) < len(block.data):
                    arrays |= sparse
                    continue
            arrays[name] = block
        return record_of(arrays)

    def decode(self, record: Arrays, shapes: Shapes) -> Params:
        names = set(shapes) | ({name + SCALES for name in shapes} & set(record) if self.sparse else set())
        if set(record) != names:
            raise PayloadError(f"broadcast does not match the model: tensors {sorted(set(record) ^ names)}")
        params = {}
        for name, shape in shapes.items():
            rows, cols = as_rows(np.empty(shape, dtype=np.bool_)).shape
            try:
                if name + SCALES in names:
                    blocks = self._sparse_rows(record, name, rows, cols)
                else:
                    data = record_payload(name, record[name])
                    if self.deflated:
                        data = inflate(data, block_size(rows, cols, self.bits))
                    blocks = unpack_rows(data, rows, cols, self.bits)
            except CodecError as err:
                raise PayloadError(f"undecodable broadcast: tensor {name!r}: {err}") from None
            params[name] = blocks.reshape(shape)
        return params

    def _sparse_rows(self, record: Arrays, name: str, rows: int, cols: int) -> np.ndarray:
        """A pruned broadcast's tensor: its non-zero codes and row scales -> (rows, cols) float32."""
        steps = densify(unpack_update(record_of({name: record[name]}), {name: (rows, cols)}))[name]
        steps = np.rint(steps)  # the int8 value codec carries integer steps to well within half of one
        q = levels(self.bits)
        if (np.abs(steps) > q).any():
            raise CodecError(f"codes beyond +-{q}")
        try:
            scales = array_of(record[name + SCALES], writable=False)
        except ValueError as err:
            raise CodecError(f"unreadable row scales: {err}") from None
        if scales.dtype != np.float16 or scales.shape != (rows,):
            raise CodecError(f"row scales of {scales.dtype} {scales.shape}, expected float16 {(rows,)}")
        return dequantise_rows(check_scales(scales), (steps + q).astype(np.uint8), self.bits)


def check_model(params: Params, shapes: Shapes) -> Params:
    """The broadcast's tensors are the model's: same names, shapes, float32,
    finite (a server sends only finite models: a NaN here is a damaged
    message, and a client that trained on it would send NaN back)."""
    if set(params) != set(shapes):
        raise PayloadError(f"broadcast does not match the model: tensors {sorted(set(params) ^ set(shapes))}")
    for name, value in params.items():
        if tuple(value.shape) != tuple(shapes[name]) or value.dtype != np.float32:
            raise PayloadError(f"broadcast tensor {name!r}: expected float32 {shapes[name]}, got {value.dtype} {value.shape}")
        if not np.isfinite(value).all():
            raise PayloadError(f"broadcast tensor {name!r} holds NaN or an infinity")
    return params
