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

from prunus.common import kernels
from prunus.common.codec import CodecError, pack_update, unpack_update
from prunus.common.compression.base import Encoded, Params, PayloadError, RoundContext, Shapes, rows_outside
from prunus.common.payload import Arrays
from prunus.common.pruning import PruneSpec, density_at, prune_corrected
from prunus.common.update import Update

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig

# a residual's kept rows, their values, and (beside rows) the tensor's shape
_ROWS, _VALUES, _SHAPE = ".rows", ".val", ".shape"


class SparseUplink:
    """Base of the selection methods: subclasses implement `select`."""

    name: ClassVar[str]
    draws: ClassVar[bool] = False  # whether `select` takes a seeded Generator
    reads_model: bool = False  # whether encode and decode read `RoundContext.model`

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings
        self.spec = PruneSpec(method=self.name, density=settings.density, error_feedback=settings.error_feedback,
                              value_codec=settings.value_codec)

    @staticmethod
    def select(arrays: Params, spec: PruneSpec, density: float, rng: np.random.Generator | None) -> Params:
        """Boolean keep-mask per tensor (finite inputs; see `common.pruning.select`)."""
        raise NotImplementedError

    def round_basis(self, params: Params, seed: int, server_round: int) -> Params | None:
        """What a secure round's messages carry so that its clients share
        coordinates beyond the seed and round (None: nothing; see `lowrank`)."""
        return None

    @classmethod
    def keep(cls, arrays: Params, spec: PruneSpec, density: float, rng: np.random.Generator | None) -> Params:
        """The kept entries' increasing flat int64 positions per tensor: `select`'s
        masks, unless a method finds positions itself (see `common.pruning.keep`)."""
        return {name: np.flatnonzero(mask) for name, mask in cls.select(arrays, spec, density, rng).items()}

    # ---------------------------------------------------------- client half
    def encode(self, update: Params, state: Params | None, ctx: RoundContext) -> Encoded:
        s = self.settings
        density = density_at(ctx.server_round, s.density, s.density_warmup_rounds)
        rng = np.random.default_rng([ctx.seed, ctx.server_round, ctx.partition_id, 2]) if self.draws else None
        # the residual is kept per unit of local learning rate (see RoundContext.lr)
        corrected, held = carry(update, state if self.spec.error_feedback else None, ctx)
        result = prune_corrected(corrected, self.spec, density, rng)
        record = pack_update(result.sparse, index_codec=s.index_codec, value_codec=self.spec.value_codec)
        return Encoded(record, residual_to_state(result.residual, ctx.lr, held), result.nnz, density)

    # ---------------------------------------------------------- server half
    def decode(self, record: Arrays, shapes: Shapes, ctx: RoundContext | None = None) -> Update:
        check_names(record, shapes)
        try:
            return dict(unpack_update(record, shapes))  # each header's shape checked before its streams
        except CodecError as err:
            raise PayloadError(f"undecodable payload: {err}") from None


def check_names(record: Arrays, shapes: Shapes) -> None:
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


def carry(update: Params, state: Params | None, ctx: RoundContext) -> tuple[Params, HeldRows]:
    """`update + residual * lr` (float32, new arrays) from the residual's
    stored rows, without building the dense residual. The stored rows outside
    `ctx.rows` are held back (carried now, they would put rows in the update
    that the client was not sent) and returned as (row ids, rows)."""
    stored = {name: (shape, ids, rows) for name, shape, ids, rows in _stored(state or {})}
    for name, (shape, _, _) in stored.items():
        if name not in update or update[name].shape != shape:
            raise ValueError(f"residual {name!r} of shape {shape} does not match the update")
    corrected, held = {}, {}
    for name, x in update.items():
        shape, ids, rows = stored.get(name, (None, None, None))
        allowed = (ctx.rows or {}).get(name)
        if ids is None and rows is not None and allowed is None:  # kept whole: one pass, no row gather
            x = np.ascontiguousarray(x, dtype=np.float32)
            whole = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1)
            corrected[name] = kernels.scaled_add(whole, np.float32(ctx.lr), x.reshape(-1)).reshape(x.shape)
            continue
        corrected[name] = np.array(x, dtype=np.float32, order="C")
        if rows is None:
            continue
        if ids is None:
            ids, rows = np.arange(shape[0] if shape else 1), _as_rows(rows)
        if allowed is not None:
            outside = ~np.isin(ids, allowed)
            if outside.any():
                held[name] = (ids[outside], rows[outside])
                ids, rows = ids[~outside], rows[~outside]
        _as_rows(corrected[name])[ids] += rows * ctx.lr
    return corrected, held


HeldRows = dict[str, tuple[np.ndarray, np.ndarray]]

# A residual with non-zero entries in at least this share of its rows is
# kept whole: its row ids would save little, and carrying it is then two
# passes instead of a gather and a scatter of most of the table (with error
# feedback a returning client's residual soon covers most item rows).
WHOLE_SHARE = 0.5


def residual_to_state(residual: Params, lr: float = 1.0, held: HeldRows | None = None) -> Params:
    """The residual (dense float32, per tensor) divided by `lr`, plus the
    `held` rows, for the client's state: whole if most rows are non-zero
    (`WHOLE_SHARE`), else as its non-zero rows -- the ids of the rows with
    any non-zero bit (-0.0 counts, so the state restores the residual bit for
    bit) and those rows whole, with the tensor's shape (a whole residual's
    values have it). A client writes its state every round and the
    residual grows toward the size of the model; rows cost 4 bytes an
    entry, flat indices 8 or 12. Only the kept rows are divided."""
    arrays: Params = {}
    for name, value in residual.items():
        x = np.asarray(value, dtype=np.float32)
        x = x if x.flags.c_contiguous else x.copy()  # (a 0-D array stays 0-D)
        rows = _as_rows(x)
        extra = (held or {}).get(name)
        # most rows with a non-zero first entry: whole, without finding the rows
        whole = rows.shape[1] > 0 and np.count_nonzero(rows[:, 0]) >= WHOLE_SHARE * len(rows) > 0
        if not whole:
            kept = np.flatnonzero(np.bitwise_or.reduce(rows.view(np.uint32), axis=1))
            if extra is not None:
                kept = np.union1d(kept, extra[0])
            whole = len(kept) >= WHOLE_SHARE * len(rows) > 0
        values = x / np.float32(lr) if whole else rows[kept] / np.float32(lr)
        if extra is not None and whole:
            _as_rows(values)[extra[0]] += extra[1]
        elif extra is not None:
            values[np.searchsorted(kept, extra[0])] += extra[1]
        if not whole:  # (a whole residual's values have the tensor's shape)
            arrays[name + _ROWS] = kept.astype(np.int32 if len(rows) < 2**31 else np.int64)
            arrays[name + _SHAPE] = np.asarray(x.shape, dtype=np.int64)
        arrays[name + _VALUES] = values
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


def _stored(arrays: Params):
    """(name, shape, row ids, rows) of each tensor a residual state holds; ids
    None for a residual kept whole (`rows` is then the tensor itself)."""
    for name in (key[: -len(_VALUES)] for key in arrays if key.endswith(_VALUES)):
        ids, values = arrays.get(name + _ROWS), arrays[name + _VALUES]
        shape = values.shape if ids is None else tuple(int(d) for d in arrays[name + _SHAPE])
        yield name, shape, ids, values


def check_residual(arrays: Params, shapes: Shapes) -> None:
    """ValueError unless `arrays` is laid out as `residual_to_state` lays out
    a residual of a model of `shapes`: float32 values of a tensor the model
    has, whole or as rows whose ids increase strictly within the tensor,
    beside the tensor's shape. A residual read back from a store is checked
    so before it is used (`client.state_check`): row ids out of range would
    write elsewhere, a shape of its own would allocate whatever it says."""
    names = {key[: -len(_VALUES)] for key in arrays if key.endswith(_VALUES)}
    stray = sorted(set(arrays) - {name + suffix for name in names for suffix in (_VALUES, _ROWS, _SHAPE)})
    if stray:
        raise ValueError(f"arrays {stray} belong to no tensor's values")
    unknown = sorted(names - set(shapes))
    if unknown:
        raise ValueError(f"tensors {unknown} are not the model's")
    for name in sorted(names):
        values, ids, shape = arrays[name + _VALUES], arrays.get(name + _ROWS), arrays.get(name + _SHAPE)
        model = tuple(shapes[name])
        if values.dtype != np.float32:
            raise ValueError(f"{name!r}: values of dtype {values.dtype}, not float32")
        if (ids is None) != (shape is None):
            raise ValueError(f"{name!r}: row ids without the tensor's shape, or the shape without row ids")
        if ids is None:
            if values.shape != model:
                raise ValueError(f"{name!r}: values of shape {values.shape}, the model's is {model}")
            continue
        if shape.dtype.kind not in "iu" or shape.shape != (len(model),) or tuple(shape.tolist()) != model:
            raise ValueError(f"{name!r}: shape {shape.tolist()} of {shape.dtype}, the model's is {list(model)}")
        n_rows, width = (model[0], math.prod(model[1:])) if model else (1, 1)
        if ids.dtype.kind not in "iu" or ids.ndim != 1 or (len(ids) and (
                ids[0] < 0 or ids[-1] >= n_rows or (np.diff(ids) <= 0).any())):
            raise ValueError(f"{name!r}: row ids must be integers increasing strictly within [0, {n_rows})")
        if values.shape != (len(ids), width):
            raise ValueError(f"{name!r}: values of shape {values.shape} for {len(ids)} rows of {width}")


def residual_from_state(arrays: Params) -> Params:
    """The dense residual kept by `residual_to_state`."""
    residual: Params = {}
    for name, shape, ids, rows in _stored(arrays):
        if ids is None:
            residual[name] = np.array(rows, dtype=np.float32).reshape(shape)
            continue
        dense = np.zeros(shape, np.float32)
        _as_rows(dense)[ids] = rows
        residual[name] = dense
    return residual
