"""Robust aggregation: what one hostile (or broken) reply can do to the model is bounded.

* Adaptive zeroing (`zero-factor`, as TensorFlow Federated's robust
  aggregator does): a reply whose norm exceeds `zero-factor` times the
  round's median reply norm is left out of the round altogether, so a x100
  update (sign-flipped or not) is not merely shrunk but dropped.
* Norm clipping per reply, before aggregation: a fixed bound (`clip-norm`) and
  an adaptive one, a quantile of the round's reply norms (`clip-quantile`, as
  TensorFlow Federated's adaptive clipping does with a quantile estimate). A
  reply above the bound is scaled down to it, so a x100 update counts as one
  ordinary-sized update.
* Coordinate-wise median and trimmed mean over the clients that touched a row
  (`aggregator`): each row's entries are ordered across those clients and the
  extreme ones dropped, which tolerates a minority of arbitrary values that
  clipping alone would only shrink. Rows nobody touched stay zero, as with
  per-row averaging.
"""

from __future__ import annotations

import math

import numpy as np

from prunus.common.update import Dense, Factored, Sparse, TensorUpdate, Update, rows_and_width, to_dense, touched_rows

ROW_CHUNK = 512  # rows ordered at once: bounds the (rows x clients x width) work array


def update_norm(update: Update) -> float:
    """L2 norm of a whole update (all tensors), in float64."""
    total = 0.0
    for t in update.values():
        values = to_dense(t) if isinstance(t, Factored) else t.values
        total += float(np.square(np.asarray(values, dtype=np.float64)).sum())
    return math.sqrt(total)


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


def outliers(updates: list[Update], factor: float) -> list[int]:
    """Indices of the updates whose norm exceeds `factor` x the median norm (0 = none)."""
    if factor <= 0 or not updates:
        return []
    norms = np.array([update_norm(u) for u in updates])
    bound = factor * float(np.median(norms))
    return [i for i, norm in enumerate(norms) if norm > bound]


def clip_bound(norms: list[float], fixed: float, quantile: float) -> float:
    """The round's clipping bound: the smaller of the fixed one and the
    `quantile` of the round's norms (each 0 = not used); inf when neither is."""
    bounds = [fixed] if fixed > 0 else []
    if quantile > 0 and norms:
        bounds.append(float(np.quantile(norms, quantile)))
    return min(bounds) if bounds else math.inf


def clip(updates: list[Update], fixed: float, quantile: float) -> tuple[list[Update], int]:
    """Each update scaled down to the round's bound if above it; returns the
    updates and how many were clipped."""
    norms = [update_norm(u) for u in updates]
    bound = clip_bound(norms, fixed, quantile)
    out, clipped = [], 0
    for update, norm in zip(updates, norms):
        if norm > bound:
            out.append(scaled(update, bound / norm))
            clipped += 1
        else:
            out.append(update)
    return out, clipped


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
