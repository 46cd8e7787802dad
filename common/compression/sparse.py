"""The shared client and server halves of every entry-selecting uplink method.

Client half: `corrected = update + residual` (error feedback), keep the
entries the method's `select` picks, quantise them with the value codec, keep
what was not sent (pruned entries and quantisation error) as the new residual,
and encode the kept entries with `common.codec`. Server half: decode each
tensor's payload, checking its header's shape against the model before the
streams are decoded. A method module only says which entries to keep.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from flwr.app import ArrayRecord

from prunus.common.codec import CodecError, decode, pack_update, read_header, record_payload
from prunus.common.compression.base import Encoded, Params, PayloadError, RoundContext, Shapes, rows_outside
from prunus.common.pruning import PruneSpec, density_at, prune_update
from prunus.common.update import Sparse, Update

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig

_ROWS, _VALUES, _SHAPE = ".rows", ".val", ".shape"  # a residual's kept rows, their values, the tensor's shape


class SparseUplink:
    """Base of the selection methods: subclasses implement `select`."""

    name: ClassVar[str]
    draws: ClassVar[bool] = False  # whether `select` takes a seeded Generator

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings
        self.spec = PruneSpec(method=self.name, density=settings.density, threshold=settings.prune_threshold,
                              error_feedback=settings.error_feedback, value_codec=settings.value_codec)

    @staticmethod
    def select(arrays: Params, spec: PruneSpec, density: float, rng: np.random.Generator | None) -> Params:
        """Boolean keep-mask per tensor (finite inputs; see `common.pruning.select`)."""
        raise NotImplementedError

    # ---------------------------------------------------------- client half
    def encode(self, update: Params, state: Params | None, ctx: RoundContext) -> Encoded:
        s = self.settings
        density = density_at(ctx.server_round, s.density, s.density_warmup_rounds)
        rng = np.random.default_rng([ctx.seed, ctx.server_round, ctx.partition_id, 2]) if self.draws else None
        # the residual is kept per unit of local learning rate (see RoundContext.lr);
        # it is this call's own copy, so it is scaled in place
        residual = residual_from_state(state) if state else None
        held = hold_back(residual, ctx.rows) if residual else {}
        for value in (residual or {}).values():
            value *= ctx.lr
        result = prune_update(update, residual, self.spec, density, rng)
        record = pack_update(result.sparse, index_codec=s.index_codec, value_codec=self.spec.value_codec)
        for name, value in result.residual.items():
            value /= ctx.lr
            value += held.get(name, 0.0)
        return Encoded(record, residual_to_state(result.residual), result.nnz, density)

    # ---------------------------------------------------------- server half
    def decode(self, record: ArrayRecord, shapes: Shapes, ctx: RoundContext | None = None) -> Update:
        check_names(record, shapes)
        update: Update = {}
        for name, array in record.items():
            try:
                payload = record_payload(name, array)
            except CodecError as err:
                raise PayloadError(f"undecodable payload: {err}") from None
            try:
                shape = read_header(payload).shape
                if tuple(shape) != tuple(shapes[name]):  # before any stream is decoded
                    raise PayloadError(f"tensor {name!r}: expected shape {shapes[name]}, got {shape}")
                update[name] = Sparse(*decode(payload))
            except CodecError as err:
                raise PayloadError(f"undecodable payload: tensor {name!r}: {err}") from None
        return update


def check_names(record: ArrayRecord, shapes: Shapes) -> None:
    if set(record) != set(shapes):
        missing, extra = sorted(set(shapes) - set(record)), sorted(set(record) - set(shapes))
        raise PayloadError(f"reply arrays do not match the model: missing {missing}, unexpected {extra}")


def hold_back(residual: Params, rows: dict[str, np.ndarray] | None) -> Params:
    """Move the residual of rows outside `rows` out of `residual` (in place)
    and return it: carried now, it would put rows in the update that the
    client was not sent."""
    held = {}
    for name, ids in (rows or {}).items():
        if name in residual:
            outside = rows_outside(len(residual[name]), ids)
            held[name] = np.zeros_like(residual[name])
            held[name][outside] = residual[name][outside]
            residual[name][outside] = 0.0
    return held


def residual_to_state(residual: Params) -> Params:
    """The residual (dense float32, per tensor) as its non-zero rows for the
    client's state: the ids of the rows with any non-zero entry (-0.0 counts,
    so the state restores the residual bit for bit) and those rows whole.
    A client writes its state every round and the residual grows toward the
    size of the model; rows cost 4 bytes an entry, flat indices 8 or 12."""
    arrays: Params = {}
    for name, value in residual.items():
        x = np.asarray(value, dtype=np.float32)
        x = x if x.flags.c_contiguous else x.copy()  # (a 0-D array stays 0-D)
        rows = _as_rows(x)
        kept = np.flatnonzero(np.bitwise_or.reduce(rows.view(np.uint32), axis=1))  # any bit set: -0.0 too
        arrays[name + _ROWS] = kept.astype(np.int32 if len(rows) < 2**31 else np.int64)
        arrays[name + _VALUES] = rows[kept]
        arrays[name + _SHAPE] = np.asarray(x.shape, dtype=np.int64)
    return arrays


def owe(state: Params, amounts: Params, lr: float) -> Params:
    """The residual state `state` less `amounts` (an update's units): what the
    client added to its update and must take back out of the model later
    (decoys, `fill-repay`); the residual carries it into its next replies."""
    residual = residual_from_state(state) if state else {}
    for name, amount in amounts.items():
        if amount.any():
            residual[name] = residual.get(name, np.zeros(amount.shape, np.float32)) - amount / lr
    return residual_to_state(residual)


def _as_rows(x: np.ndarray) -> np.ndarray:
    """A view of `x` as a matrix of its rows (a scalar: one row of one entry)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.ndim else x.reshape(1, 1)


def residual_from_state(arrays: Params) -> Params:
    """The dense residual kept by `residual_to_state`."""
    residual: Params = {}
    for name in (key[: -len(_ROWS)] for key in arrays if key.endswith(_ROWS)):
        shape = tuple(int(d) for d in arrays[name + _SHAPE])
        dense = np.zeros(shape, np.float32)
        _as_rows(dense)[arrays[name + _ROWS]] = arrays[name + _VALUES]
        residual[name] = dense
    return residual
