"""Robust aggregation's parts: what one hostile (or broken) reply can do to the model is bounded.

Every reference a reply is judged against leaves that reply out: it is a
statistic of the round's *other* replies (`others_quantile`, the lower
quantile, an observed value), so no reply can raise the bar it is held to,
in a round of two replies as in a round of a hundred.

* Adaptive zeroing (`zero-factor`, as TensorFlow Federated's robust
  aggregator does): a reply whose norm exceeds `zero-factor` times the median
  of the other replies' norms is left out of the round altogether, so a x100
  update (sign-flipped or not) is not merely shrunk but dropped.
* A trust region per row (`row-clip`, `row-clip-ratio`): each reply's update
  of a row is scaled down to `max(row-clip-ratio * |w_r|, row-clip *
  sqrt(width))`, `w_r` the model's row; relative to the model, not to other
  replies, so it holds where few clients or one touched a row, and in a
  round of one reply.
* Norm clipping per reply: a fixed bound (`clip-norm`) and an adaptive one,
  a quantile of the other replies' norms (`clip-quantile`, as TensorFlow
  Federated's adaptive clipping does with a quantile estimate; only in a
  round with enough replies to estimate it). A reply above the bound is
  scaled down to it.
* Capped weights (`weight-cap`): a reply's num-examples counts at most
  `weight-cap` times the median of the other replies', so FedAvg weighting
  (`row-averaging = false`) cannot hand one client the step.
* Coordinate-wise median and trimmed mean over the clients that touched a row
  (`aggregator`): each row's entries are ordered across those clients and the
  extreme ones dropped, which tolerates a minority of arbitrary values that
  clipping alone would only shrink. Rows nobody touched stay zero, as with
  per-row averaging.

`server.defences` applies them in that order (zeroing judges the replies as
sent) and says what each did to which reply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prunus.common.params import Params
from prunus.common.update import (
    Dense,
    Factored,
    Sparse,
    TensorUpdate,
    Update,
    rows_and_width,
    shape_of,
    touched_rows,
)

ROW_CHUNK = 512  # rows ordered at once: bounds the (rows x clients x width) work array


def update_norm(update: Update) -> float:
    """L2 norm of a whole update (all tensors), in float64 (a factored one
    without forming its product: `row_norms`)."""
    return math.sqrt(sum(float(np.square(row_norms(t)).sum()) for t in update.values()))


def scaled(update: Update, factor: float) -> Update:
    """The update times `factor` (factored: its left factor)."""
    out: Update = {}
    for name, t in update.items():
        if isinstance(t, Sparse):
            out[name] = Sparse(t.indices, (t.values * factor).astype(np.float32), t.shape)
        elif isinstance(t, Dense):
            out[name] = Dense((t.values * factor).astype(np.float32))
        else:
            out[name] = Factored((t.left * factor).astype(np.float32), t.right, t.shape)
    return out


def others_quantile(values: Sequence[float], q: float) -> np.ndarray:
    """For each value, the lower `q` quantile of the *other* values (an observed
    value, never an interpolation toward an extreme one); NaN where there is
    no other value. A reply cannot move the reference it is judged against,
    and a minority of extreme values cannot either: in a round of two, each
    reply is judged against the other."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2:
        return np.full(n, np.nan)
    order = np.argsort(v, kind="stable")
    ordered, position = v[order], np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    index = int(math.floor(q * (n - 2) + 1e-9))  # of the n - 1 others, in order
    # the others in order are `ordered` without the value's own position
    return np.where(index < position, ordered[index], ordered[index + 1])


def outliers(norms: Sequence[float], factor: float) -> list[int]:
    """Indices of the replies whose norm exceeds `factor` x the median of the
    other replies' norms (0 = none; a reply with no other, or others of norm
    0, is not judged)."""
    if factor <= 0 or not len(norms):
        return []
    reference = others_quantile(norms, 0.5)
    return [i for i, (norm, ref) in enumerate(zip(norms, reference)) if ref > 0 and norm > factor * ref]


def clip_bounds(norms: Sequence[float], fixed: float, quantile: float) -> np.ndarray:
    """Each reply's clipping bound: the smaller of the fixed one and the
    `quantile` of the other replies' norms (each 0 = not used); inf where
    neither is. The quantile is used only where there are enough other replies
    for it (`quantile_support`): of one other reply it would be that reply's
    norm, and the larger of two honest replies would be clipped to the smaller."""
    bounds = np.full(len(norms), fixed if fixed > 0 else math.inf)
    if quantile > 0 and len(norms) - 1 >= quantile_support(quantile):
        bounds = np.minimum(bounds, others_quantile(norms, quantile))
    return bounds


def quantile_support(q: float) -> int:
    """How many values a `q` quantile needs to be estimated at all: 1 / (1 - q)
    (10 for the 0.9 quantile), so that a share 1 - q of them can lie above it;
    of fewer, the lower quantile falls toward their bottom (of two, the
    smaller). For q = 1 (the largest value): one."""
    return 1 if q >= 1 else math.ceil(1 / (1 - q) - 1e-9)


def row_bounds(params: Params, ratio: float, floor: float) -> dict[str, np.ndarray]:
    """Each row's trust region, from the model: `max(ratio * |w_r|, floor * sqrt(width))`
    (the floor is per entry, so a bias and a 64-wide embedding row get the same
    per-entry room; a row of zeros, a fresh bias, gets the floor)."""
    bounds = {}
    for name, value in params.items():
        rows, width = rows_and_width(value.shape)
        norms = np.linalg.norm(np.asarray(value, np.float64).reshape(rows, width), axis=1)
        bounds[name] = np.maximum(ratio * norms, floor * math.sqrt(width))
    return bounds


def row_norms(t: TensorUpdate) -> np.ndarray:
    """The L2 norm of each row of a tensor's update (float64; 0 for untouched rows)."""
    rows, width = rows_and_width(shape_of(t))
    if isinstance(t, Sparse):
        indices = np.asarray(t.indices, dtype=np.int64)
        return np.sqrt(np.bincount(indices // width, np.square(np.asarray(t.values, np.float64)), minlength=rows))
    if isinstance(t, Dense):
        return np.linalg.norm(np.asarray(t.values, np.float64).reshape(rows, width), axis=1)
    left, right = np.asarray(t.left, np.float64), np.asarray(t.right, np.float64)
    gram = right @ right.T  # |L_r R|^2 = L_r (R R^T) L_r^T: no rows x width product
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", left, gram, left), 0.0))


def clip_rows(update: Update, bounds: dict[str, np.ndarray]) -> tuple[Update, int, float]:
    """The update with every row above its bound scaled down to it; returns it,
    how many rows were, and the largest norm-to-bound ratio among them (1 if none)."""
    out: Update = {}
    clipped, worst = 0, 1.0
    for name, t in update.items():
        norms = row_norms(t)
        over = norms > bounds[name]
        if not over.any():
            out[name] = t
            continue
        clipped += int(over.sum())
        worst = max(worst, float((norms[over] / bounds[name][over]).max()))
        factor = np.where(over, bounds[name] / np.where(over, norms, 1.0), 1.0)
        out[name] = _scale_rows(t, factor)
    return out, clipped, worst


def _scale_rows(t: TensorUpdate, factor: np.ndarray) -> TensorUpdate:
    """Row `r` of the update times `factor[r]`."""
    rows, width = rows_and_width(shape_of(t))
    if isinstance(t, Sparse):
        row = np.asarray(t.indices, dtype=np.int64) // width
        return Sparse(t.indices, (np.asarray(t.values, np.float64) * factor[row]).astype(np.float32), t.shape)
    if isinstance(t, Dense):
        values = np.asarray(t.values, np.float64).reshape(rows, width) * factor[:, None]
        return Dense(values.reshape(t.values.shape).astype(np.float32))
    return Factored((np.asarray(t.left, np.float64) * factor[:, None]).astype(np.float32), t.right, t.shape)


def capped_weights(weights: Sequence[float], cap: float) -> list[float]:
    """Each weight at most `cap` x the median of the other weights (0 = as
    given; a lone weight stays as it is: its reply is the round either way)."""
    if cap <= 0:
        return list(weights)
    reference = others_quantile(weights, 0.5)
    return [min(w, cap * ref) if ref > 0 else w for w, ref in zip(weights, reference)]


def coordinate_wise(updates: list[Update], shapes: dict[str, tuple[int, ...]], trim: float | None) -> dict[str, np.ndarray]:
    """Per row, over the clients that touched it: the coordinate-wise median
    (`trim` None) or the mean after dropping `floor(trim * count)` values at
    each end of every coordinate."""
    return {name: _tensor(name, shape, updates, trim) for name, shape in shapes.items()}


def _tensor(name: str, shape: tuple[int, ...], updates: list[Update], trim: float | None) -> np.ndarray:
    rows, width = rows_and_width(shape)
    touched = [_touched(u[name], width) for u in updates]
    out = np.zeros((rows, width), dtype=np.float32)
    present = np.unique(np.concatenate([r for r, _ in touched])) if touched else np.zeros(0, np.int64)
    for start in range(0, len(present), ROW_CHUNK):
        chunk = present[start:start + ROW_CHUNK]
        out[chunk] = _rows(chunk, touched, width, trim)
    return out.reshape(shape)


def _touched(t: TensorUpdate, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows an update touches (sorted) and their values, (rows, width)."""
    rows = touched_rows(t)
    if isinstance(t, Sparse):
        values = np.zeros((len(rows), width), dtype=np.float32)
        indices = np.asarray(t.indices)
        values[np.searchsorted(rows, indices // width), indices % width] = t.values
        return rows, values
    if isinstance(t, Dense):
        return rows, np.asarray(t.values, dtype=np.float32).reshape(-1, width)[rows]
    return rows, (t.left[rows].astype(np.float64) @ t.right.astype(np.float64)).astype(np.float32)


def _rows(chunk: np.ndarray, touched: list[tuple[np.ndarray, np.ndarray]], width: int, trim: float | None) -> np.ndarray:
    """The robust value of each row in `chunk`, from the clients that touched it."""
    stack = np.full((len(chunk), len(touched), width), np.nan)
    for client, (rows, values) in enumerate(touched):
        mine = np.isin(chunk, rows)
        if mine.any():
            stack[mine, client] = values[np.searchsorted(rows, chunk[mine])]
    if trim is None:
        return np.nanmedian(stack, axis=1)
    ordered = np.sort(stack, axis=1)  # NaN (client did not touch the row) sorts last
    count = np.sum(~np.isnan(stack[:, :, 0]), axis=1)
    cut = np.floor(trim * count).astype(int)
    position = np.arange(len(touched))[None, :]
    keep = (position >= cut[:, None]) & (position < (count - cut)[:, None])
    kept = np.where(keep[:, :, None], ordered, 0.0)
    return kept.sum(axis=1) / np.maximum(keep.sum(axis=1), 1)[:, None]
