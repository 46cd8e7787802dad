"""`lowrank`: each item table's update as a rank-`rank` factor (CoLR, Nguyen et al., WWW 2024).

Every client of a round projects its (error-corrected) update of a wide
table, `U` (rows x width), onto the same random `rank`-dimensional subspace
of its columns: `A = U Q`, with `Q` (width x rank, orthonormal columns) drawn
from (seed, round) alone, so the server regenerates it instead of receiving
it. The reply carries `A`'s non-zero rows (a client touches few item rows)
through the value codec; the server adds `A Q^T` exactly, as a `Factored`
update. What the projection and the value codec lose stays in the error-
feedback residual. CoLR trains `A` directly with `Q` fixed; one SGD step of
that is this projection of the step (up to `Q^T Q = I`), which works with
any local trainer. Tensors no wider than `rank` (bias columns, 1-D biases)
travel as their non-zeros. `rank` is the compression: width / rank on the
item table (32 / 4 = 8x before the value codec). Under secure aggregation
every client sends `A` whole (`SharedProjection`): the round's `Q` is shared,
so the sum of the clients' `A` is the `A` of their summed update. With
`rank-basis = "model"` `Q` is the top of the global model's table's right
singular vectors instead (`model_basis`), sent with the round's training
messages (width x rank float32): a client's update lies mostly in it. A
model basis alone confines every update to the span the model already uses
(its other directions never move: the model learns a rank-`rank` table);
`rank-explore` of the rank's directions are drawn at random each round from
outside the top ones, so over the rounds every direction can grow.

With `rank-basis = "client"` each client factors its own update: `Q` is the
top `rank` right singular vectors of its (error-corrected) update, sent in its
reply beside `A` (`<table>.factor`, width x rank, through the value codec).
No round's clients share it, so it cannot be summed securely; in exchange it
holds nearly all of one client's update: with its user vector fixed, an MF
client moves every item row along that vector (plus the penalty's pull
toward zero), so rank 1 holds 99.99% of the item-table update on ML-1M.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import field
from typing import TYPE_CHECKING

import numpy as np

from prunus.common.codec import pack_update
from prunus.common.compression import UPLINK
from prunus.common.compression.base import Encoded, Params, PayloadError, RoundContext, Shapes
from prunus.common.compression.sparse import SparseUplink, hold_back, residual_from_state, residual_to_state
from prunus.common.config import ConfigError, choice, non_negative, positive, section
from prunus.common.params import array_of, npy_array
from prunus.common.payload import Arrays, Content
from prunus.common.pruning import quantise
from prunus.common.update import Factored, Update, nonzeros, to_dense

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


@section
class LowRankOptions:
    """`lowrank`'s own settings (section `prune-method.lowrank`)."""

    rank: int = field(default=4, metadata=positive())  # the factor's rank
    # the factor: "random" from (seed, round) (CoLR), "model": the global
    # model's top singular directions, sent with the round's training messages,
    # "client": each client's own update's, sent with its reply, or
    # "client-rows": that, and each touched row also moves along itself, by a
    # scale sent per row (`ROW_SCALE`): the L2 penalty's pull toward zero,
    # which no rank of the client's factor holds (on ML-1M, 95% of what rank
    # 1 leaves out of a round's summed step points along -model)
    rank_basis: str = field(default="random", metadata=choice("random", "model", "client", "client-rows"))
    # with rank-basis "model": how many of the rank's directions are drawn at
    # random each round from outside the model's top ones (0: none)
    rank_explore: int = field(default=0, metadata=non_negative())

    def __post_init__(self) -> None:
        if self.rank_explore and (self.rank_basis != "model" or self.rank_explore >= self.rank):
            raise ConfigError(f"rank-explore: {self.rank_explore} needs rank-basis = \"model\" and a rank "
                              f"above it (rank = {self.rank}): the rest of the rank is the model's top directions")


def shared_factor(width: int, rank: int, seed: int, server_round: int, name: str) -> np.ndarray:
    """`Q` (width x rank) with orthonormal columns, from (seed, round, tensor name) alone."""
    rng = np.random.default_rng([seed, server_round, zlib.crc32(name.encode()), 11])
    q, _ = np.linalg.qr(rng.standard_normal((width, rank)))
    return q.astype(np.float32)


def model_basis(table: np.ndarray, rank: int, explore: int = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """The top-`rank` right singular vectors of `table` (width x rank,
    orthonormal columns): the directions the model's rows use most, which a
    client's update of them mostly follows (its user vectors were fitted to
    them). On a trained ML-100K model they hold 55% (rank 4) and 74% (rank 8)
    of a client's item-table update, where a random factor holds 13% and 20%.
    With `explore`, the last `explore` columns are instead random directions
    orthogonal to the first `rank - explore` (drawn from `rng`)."""
    table = np.asarray(table, np.float64)
    top = rank - explore
    # only a table of fewer rows than the rank needs its basis completed: a
    # full SVD of a tall table would also build its rows x rows left factor
    _, _, vt = np.linalg.svd(table, full_matrices=table.shape[0] < rank)
    basis = vt[:top].T
    if explore:
        draw = rng.standard_normal((table.shape[1], explore))
        draw -= basis @ (basis.T @ draw)  # outside the top directions
        basis = np.hstack([basis, np.linalg.qr(draw)[0]])
    return np.ascontiguousarray(basis, dtype=np.float32)


FACTOR = ".factor"  # suffix of a reply's own factor of a table (`rank-basis = "client"` or "client-rows")
ROW_SCALE = ".rowscale"  # suffix of a reply's per-row scales of a table (`rank-basis = "client-rows"`)


def row_scales(corrected: np.ndarray, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row, the least-squares coefficient of the row as received on
    `corrected`'s row, beside the factor `q`: the part of the received row
    outside `q`'s span, projected on. Zero for untouched rows and for rows
    (nearly) inside the span."""
    outside = rows - (rows @ np.linalg.pinv(q).T) @ q.T
    norms = np.einsum("ij,ij->i", outside, outside)
    touched = np.any(corrected != 0, axis=1) & (norms > 1e-12 * np.einsum("ij,ij->i", rows, rows) + 1e-30)
    scales = np.zeros(len(rows), np.float32)
    scales[touched] = np.einsum("ij,ij->i", corrected[touched], outside[touched]) / norms[touched]
    return scales


def client_factor(update: np.ndarray, rank: int) -> np.ndarray:
    """The top-`rank` right singular vectors of a client's update of one
    table (width x rank, orthonormal columns): the top eigenvectors of its
    width x width Gram matrix, which costs one product over the touched rows
    (3x faster than an SVD of the rows, which took 97% of a round on ML-1M
    with two runs sharing two cores)."""
    touched = update[np.any(update != 0, axis=1)].astype(np.float64)
    _, vectors = np.linalg.eigh(touched.T @ touched)  # eigenvalues ascending
    return np.ascontiguousarray(vectors[:, ::-1][:, :rank], dtype=np.float32)


OWN_BASES = ("client", "client-rows")  # each client factors its own update
BASIS = "basis"  # a training message's record of the round's factors (`rank-basis = "model"`)


def basis_content(basis: Params | None) -> Content | None:
    """What a training message carries of the round's factors (None: nothing)."""
    if basis is None:
        return None
    return Content({BASIS: Arrays({name: npy_array(value) for name, value in basis.items()})})


ORTHONORMAL_TOLERANCE = 1e-3  # how far a received basis's Q^T Q may be from the identity (float32 SVD: ~1e-6)


def read_basis(content: Content, shapes: Shapes) -> Params | None:
    """The factors a training message carries (None: it carries none): finite
    float32 (width x rank) arrays of one rank, one per table wider than it,
    each with orthonormal columns (`model_basis`'s: a client projects its
    update onto them and keeps the rest as its residual; a factor of any
    other scale would grow that residual without bound)."""
    record = content.get(BASIS)
    if record is None:
        return None
    if not isinstance(record, Arrays) or not record:
        raise PayloadError(f"'{BASIS}' must be a non-empty Arrays")
    if not set(record) <= set(shapes):  # before any array is read: a record of thousands costs nothing
        raise PayloadError(f"'{BASIS}' names tensors the model lacks: {sorted(set(record) - set(shapes))[:10]}")
    basis = {}
    for name in record:
        try:
            basis[name] = array_of(record[name], writable=False)
        except ValueError as err:
            raise PayloadError(f"'{BASIS}' {name!r}: {err}") from None
        if basis[name].dtype != np.float32 or basis[name].ndim != 2 or not np.isfinite(basis[name]).all():
            raise PayloadError(f"'{BASIS}' {name!r}: not a finite float32 matrix")
    rank = next(iter(basis.values())).shape[1]
    wide = {name: shape for name, shape in shapes.items() if factored(shape, rank)}
    if sorted(basis) != sorted(wide) or any(basis[name].shape != (shape[1], rank) for name, shape in wide.items()):
        raise PayloadError(f"'{BASIS}' must hold a (width x {rank}) factor for each table wider than {rank}: "
                           f"{sorted(wide)}")
    for name, q in basis.items():
        gram = q.astype(np.float64).T @ q.astype(np.float64)
        if np.abs(gram - np.eye(rank)).max() > ORTHONORMAL_TOLERANCE:
            raise PayloadError(f"'{BASIS}' {name!r}: the columns are not orthonormal")
    return basis


def factored(shape: tuple[int, ...], rank: int) -> bool:
    """Whether a tensor travels as its rank-`rank` factor (a table wider than `rank`)."""
    return len(shape) == 2 and shape[1] > rank


class SharedProjection:
    """Secure aggregation's low-rank form: each wide table as `U Q`, the rest
    whole; `Q` the round's random factor, or the `basis` the round's messages
    carry (`rank-basis = "model"`)."""

    def __init__(self, rank: int, seed: int, server_round: int, basis: Params | None = None) -> None:
        self.rank, self.seed, self.server_round, self.basis = rank, seed, server_round, basis

    def factored(self, shape: tuple[int, ...]) -> bool:
        return factored(shape, self.rank)

    def factor(self, name: str, width: int) -> np.ndarray:
        if self.basis is not None:
            return self.basis[name]
        return shared_factor(width, self.rank, self.seed, self.server_round, name)

    def width(self, name: str, shape: tuple[int, ...]) -> int:
        return shape[0] * self.rank if self.factored(shape) else math.prod(shape)

    def project(self, name: str, value: np.ndarray) -> np.ndarray:
        if not self.factored(value.shape):
            return value.reshape(-1)
        out = np.zeros((value.shape[0], self.rank), np.float32)
        touched = np.flatnonzero(np.any(value != 0, axis=1))  # a client's update touches few rows
        out[touched] = value[touched] @ self.factor(name, value.shape[1])
        return out.reshape(-1)

    def lift(self, name: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if not self.factored(shape):
            return values.reshape(shape)
        q = self.factor(name, shape[1]).astype(values.dtype)
        return values.reshape(shape[0], self.rank) @ q.T


@UPLINK.register("lowrank")
class LowRank(SparseUplink):
    name = "lowrank"
    Options = LowRankOptions

    def __init__(self, settings: CompressionConfig, options: LowRankOptions) -> None:
        super().__init__(settings)
        self.options = options

    @staticmethod
    def select(arrays, spec, density, rng):
        """Low rank selects no entries (it projects): as `none`, every non-zero."""
        return {name: x != 0 for name, x in arrays.items()}

    def factored(self, shape: tuple[int, ...]) -> bool:
        return factored(shape, self.options.rank)

    def coordinates(self, seed: int, server_round: int, basis: Params | None = None) -> SharedProjection:
        return SharedProjection(self.options.rank, seed, server_round, basis)

    def round_basis(self, params: Params, seed: int, server_round: int) -> Params | None:
        """With `rank-basis = "model"`, each wide table's `model_basis`
        (its explored directions drawn from (seed, round, tensor name)): the
        round's training messages carry it (`BASIS`), so every client
        projects alike and the server lifts with the same factor."""
        if self.options.rank_basis != "model":
            return None
        rank, explore = self.options.rank, self.options.rank_explore
        return {name: model_basis(value, rank, explore, np.random.default_rng([seed, server_round, zlib.crc32(
                    name.encode()), 13])) for name, value in params.items() if self.factored(value.shape)}

    # ---------------------------------------------------------- client half
    def encode(self, update: Params, state: Params | None, ctx: RoundContext) -> Encoded:
        residual = residual_from_state(state) if state else {}
        held = hold_back(residual, ctx.rows) if residual else {}
        sent, kept, nnz = {}, {}, 0
        projection = self.coordinates(ctx.seed, ctx.server_round, ctx.basis)
        own = self.options.rank_basis in OWN_BASES
        for name, value in update.items():
            corrected = value + residual[name] * ctx.lr if name in residual else value
            if self.factored(value.shape):
                scaled = 0.0  # what the row scales carry
                if own:  # sent as the receiver decodes it, so the residual holds its rounding too
                    q = quantise(client_factor(corrected, self.options.rank), self.spec.value_codec)
                    sent[name + FACTOR] = nonzeros(q)
                    if self.reads_model:
                        rows = self.received_rows(ctx, name)
                        scales = quantise(row_scales(corrected, q, rows), self.spec.value_codec)
                        sent[name + ROW_SCALE], scaled = nonzeros(scales), scales[:, None] * rows
                else:
                    q = projection.factor(name, value.shape[1])
                left = quantise((corrected - scaled) @ q, self.spec.value_codec)
                sent[name] = nonzeros(left)
                # as the server lifts it (`to_dense`): an own factor need not be
                # orthonormal after its rounding, so the product's rounding counts
                received = to_dense(Factored(left, q.T, left.shape[:1] + q.shape[:1])) + scaled if own else left @ q.T
            else:
                received = quantise(corrected, self.spec.value_codec)
                sent[name] = nonzeros(received)
            nnz += len(sent[name].indices)
            if self.settings.error_feedback:
                kept[name] = (corrected - received) / ctx.lr + held.get(name, 0.0)
        record = pack_update(sent, index_codec=self.settings.index_codec, value_codec=self.spec.value_codec)
        total = sum(v.size for v in update.values())
        return Encoded(record, residual_to_state(kept) if kept else {}, nnz, nnz / max(total, 1))

    # ---------------------------------------------------------- server half
    def decode(self, record: Arrays, shapes: Shapes, ctx: RoundContext | None = None) -> Update:
        if ctx is None:
            raise ValueError("lowrank decodes only with the reply's round context (its shared factor)")
        rank, own = self.options.rank, self.options.rank_basis in OWN_BASES
        payload_shapes = {name: (shape[0], rank) if self.factored(shape) else shape for name, shape in shapes.items()}
        wide = {name: shape for name, shape in shapes.items() if self.factored(shape)}
        if own:  # each wide table's factor (and row scales) travel beside it
            payload_shapes |= {name + FACTOR: (shape[1], rank) for name, shape in wide.items()}
        if self.reads_model:
            payload_shapes |= {name + ROW_SCALE: (shape[0],) for name, shape in wide.items()}
        update = super().decode(record, payload_shapes, ctx)
        projection = self.coordinates(ctx.seed, ctx.server_round, ctx.basis)
        for name, shape in wide.items():
            q = to_dense(update.pop(name + FACTOR)) if own else projection.factor(name, shape[1])
            left = to_dense(update[name])
            update[name] = Factored(left, q.T.copy(), shape)
            if self.reads_model:  # lifted once, as the client did; its check covers the product's
                scales = to_dense(update.pop(name + ROW_SCALE))
                lifted = to_dense(update[name]) + scales[:, None] * self.received_rows(ctx, name)
                if not np.isfinite(lifted).all():
                    raise PayloadError(f"tensor {name!r}: the row-scaled update overflows")
                update[name] = nonzeros(lifted)
            elif not np.isfinite(left @ q.T).all():
                raise PayloadError(f"tensor {name!r}: the factored update overflows")
        return update

    @property
    def reads_model(self) -> bool:
        """Whether both halves need the model as this round's messages carried it (`RoundContext.model`)."""
        return self.options.rank_basis == "client-rows"

    @staticmethod
    def received_rows(ctx: RoundContext, name: str) -> np.ndarray:
        if ctx.model is None or name not in ctx.model:
            raise ValueError(f"rank-basis \"client-rows\" needs the round's model as its messages carried it ({name!r})")
        return ctx.model[name]
