"""Update pruning: which entries of a client's model update are sent.

A client's update (``delta``: tensor name -> dense float32 array) is pruned to
a :data:`SparseUpdate` -- per tensor the codec's ``(indices, values, shape)``
form (flat row-major int64 indices, strictly increasing; float32 values) --
before :func:`common.codec.pack_update` encodes it.

Selection methods are the uplink plug-ins of :mod:`prunus.common.compression`
(one module each, registered in ``UPLINK``); :func:`select` (masks) and
:func:`keep` (the kept positions, what a client sends) dispatch to them.  ``k(d, n) = ceil(d * n)`` (see :func:`keep_count`).  No method ever
keeps an exact zero (``0.0`` or ``-0.0``): the receiver reads every unsent entry as zero anyway, so sending
one only costs bits.  Every method therefore keeps ``min(k, nnz)`` entries
when it has a count at all.

Ties (equal ``|x|`` or equal row norm at the cut) go to the lower flat index;
``topk-global`` orders tensors by name first.  So selection is a
deterministic function of the values (and of the ``rng`` for ``randomk``).

Quantisation: the kept values are round-tripped through the codec's own
value codec (:func:`quantise`), so ``sent_dense`` is bit-for-bit what
:func:`common.codec.decode` will give the receiver when the same
``value_codec`` is passed to ``encode``/``pack_update``.  The sparse update
itself carries the *pre*-quantisation kept values (the codec quantises on
encode).

Error feedback (:func:`prune_update`): ``corrected = update + residual``
(float32), and the new residual is ``corrected - sent_dense`` (float32), so
``sent_dense + new_residual == corrected``.  That is bit-exact for the fp32,
fp16 and int8 codecs (every quantised value lies within a factor 2 of its
original or is 0, so the subtraction is exact by Sterbenz's lemma); for
ternary each entry is off by at most one float32 rounding of the subtraction
and one of the addition, ``<= 2^-23 * (|corrected| + |sent|)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Mapping

import numpy as np

from .codec_values import VALUE_CODECS, round_trip
from .update import Sparse, SparseUpdate

__all__ = [
    "PruneSpec", "PruneResult", "keep_count", "top_mask", "top_indices", "density_at", "select", "keep",
    "quantise",
    "prune_update", "prune_corrected",
]


def _uplink_methods():
    from .compression import UPLINK  # the registry imports the methods, which import this module

    return UPLINK


def _check_density(density, name: str = "density") -> float:
    if isinstance(density, bool) or not isinstance(density, Real) or not 0 < float(density) <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {density!r}")
    return float(density)


@dataclass(frozen=True)
class PruneSpec:
    """How a client prunes its update (see the module docstring)."""

    method: str = "none"
    density: float = 1.0  # target fraction of entries kept, in (0, 1]
    threshold: float = 0.0  # method "threshold": keep |x| >= threshold
    error_feedback: bool = True  # keep what was not sent as a residual
    value_codec: str = "fp32"  # the codec's value codec for the kept values

    def __post_init__(self) -> None:
        methods = _uplink_methods()
        if self.method not in methods:
            raise ValueError(f"method must be one of {methods.names()}, got {self.method!r}")
        _check_density(self.density)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, Real) or not (math.isfinite(t) and t >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {t!r}")
        if self.value_codec not in VALUE_CODECS:
            raise ValueError(f"value_codec must be one of {tuple(VALUE_CODECS)}, got {self.value_codec!r}")


def keep_count(density: float, n: int) -> int:
    """``ceil(density * n)`` clamped to ``[0, n]``, robust to float noise
    (``0.1 * 30`` is 3, not 4): the product is shrunk by one part in 10^12
    before the ceiling."""
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(density * n * (1 - 1e-12))))


def density_at(round: int, target: float, warmup_rounds: int, start: float = 1.0) -> float:
    """Density schedule (DGC-style warm-up).

    ``target`` every round when ``warmup_rounds == 0``; otherwise exponential
    decay ``start * (target/start) ** ((round-1)/warmup_rounds)`` from
    ``start`` at round 1 to exactly ``target`` at round ``warmup_rounds + 1``
    and after.  Rounds count from 1 (Flower's server rounds); requires
    ``0 < target <= start <= 1``.
    """
    target = _check_density(target, "target")
    start = _check_density(start, "start")
    if start < target:
        raise ValueError(f"start ({start}) must be >= target ({target})")
    if isinstance(warmup_rounds, bool) or not isinstance(warmup_rounds, (int, np.integer)) \
            or warmup_rounds < 0:
        raise ValueError(f"warmup_rounds must be an int >= 0, got {warmup_rounds!r}")
    if isinstance(round, bool) or not isinstance(round, (int, np.integer)) or round < 1:
        raise ValueError(f"round must be an int >= 1, got {round!r}")
    if warmup_rounds == 0 or round >= warmup_rounds + 1:
        return target
    if round == 1:
        return start
    d = start * (target / start) ** ((round - 1) / warmup_rounds)
    return min(start, max(target, d))


# ---------------------------------------------------------------- selection
def top_mask(key: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` largest entries of 1-D ``key`` (>= 0) among its
    positive ones; ties at the cut go to the lowest positions (see
    :func:`top_indices`)."""
    mask = np.zeros(key.shape, dtype=bool)
    mask[top_indices(key, k)] = True
    return mask


def top_indices(key: np.ndarray, k: int) -> np.ndarray:
    """Increasing int64 positions of the ``k`` largest entries of 1-D ``key``
    (>= 0) among its positive ones; ties at the cut go to the lowest
    positions.  O(n).

    A client's corrected update is a model's worth of entries of which it
    keeps a few percent, so the cut is first bracketed from a strided sample:
    if at least ``k`` entries reach the sample's threshold, the top ``k`` are
    all among them (the k-th largest reaches it too) and only they are
    partitioned.  Otherwise (few positives, or an unlucky sample) the
    positive keys are partitioned; never the whole array, whose introselect
    is slow on the many duplicate zeros of a row-sparse update."""
    if k <= 0 or key.size == 0:
        return np.zeros(0, dtype=np.int64)
    if k * _SAMPLE_STRIDE < key.size:
        sample = key[::_SAMPLE_STRIDE].copy()
        above = k // _SAMPLE_STRIDE * 3 // 2 + 16  # sample entries at or above the bracket
        if sample.size > above:
            threshold = np.partition(sample, sample.size - above)[sample.size - above]
            if threshold > 0:  # else the sample has fewer positives than `above`
                at = np.flatnonzero(key >= threshold)
                if at.size >= k:
                    return _top_of(at, key[at], k)
    at = np.flatnonzero(key > 0)
    return _top_of(at, key[at], min(k, at.size))


# a prime: a stride that divides a table's row width samples the same few
# columns of every row, and columns differ in scale, so such a sample
# brackets the k-th value far too loosely
_SAMPLE_STRIDE = 11


def _top_of(at: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """The positions ``at`` (increasing) of the ``k`` largest of ``values``,
    in increasing order; ties at the cut to the lowest positions."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cut = np.partition(values, values.size - k)[values.size - k]  # the k-th largest value
    chosen = values > cut
    rest = k - int(np.count_nonzero(chosen))
    if rest:
        chosen[np.flatnonzero(values == cut)[:rest]] = True
    return at[chosen].astype(np.int64, copy=False)


def _check_finite(name: str, x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ValueError(f"tensor {name!r} has non-finite values")


def select(update: Mapping[str, np.ndarray], spec: PruneSpec, density: float,
           rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Boolean keep-mask per tensor (same shapes), by the method ``spec.method``.

    ``density`` is the density of this round (e.g. from :func:`density_at`;
    ``spec.density`` is not read here).  ``rng`` is only used (and then
    required) by methods that draw (``randomk``).  Raises ``ValueError`` for
    non-finite values.
    """
    arrays, density = _checked(update, density)
    return _uplink_methods().get(spec.method).select(arrays, spec, density, rng)


def keep(update: Mapping[str, np.ndarray], spec: PruneSpec, density: float,
         rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """What :func:`select` marks, as each tensor's increasing flat int64
    positions: what a client sends (a method that finds positions, like
    ``topk-global``, builds no model-sized mask for it)."""
    arrays, density = _checked(update, density)
    return _uplink_methods().get(spec.method).keep(arrays, spec, density, rng)


def _checked(update: Mapping[str, np.ndarray], density: float) -> tuple[dict[str, np.ndarray], float]:
    density = _check_density(density)
    arrays = {name: np.asarray(x) for name, x in update.items()}
    for name, x in arrays.items():
        _check_finite(name, x)
    return arrays, density


def quantise(values: np.ndarray, value_codec: str) -> np.ndarray:
    """What the receiver decodes for ``values`` sent with ``value_codec``:
    a round trip through :mod:`common.codec_values` (the codec's own value
    codecs, with the dtype handling of :func:`common.codec.encode`), as
    float32 of the input's shape.  Raises ``ValueError`` where ``encode``
    would (unknown codec, fp16 overflow)."""
    if value_codec not in VALUE_CODECS:
        raise ValueError(f"unknown value codec {value_codec!r}")
    v = np.asarray(values)
    shape = v.shape
    v = v.ravel().astype(np.float32 if v.dtype in (np.float16, np.float32) else np.float64, copy=False)
    return round_trip(value_codec, v).reshape(shape)


# ------------------------------------------------------------------ pruning
@dataclass(frozen=True)
class PruneResult:
    sparse: SparseUpdate  # what is sent: pre-quantisation kept values (the codec quantises)
    residual: dict[str, np.ndarray]  # new residual, dense float32; zeros without error feedback
    quantised: dict[str, np.ndarray]  # the kept values as the receiver decodes them, beside `sparse`'s indices

    @property
    def nnz(self) -> int:
        """Number of entries sent, over all tensors."""
        return sum(len(idx) for idx, _, _ in self.sparse.values())

    @property
    def sent_dense(self) -> dict[str, np.ndarray]:
        """What the receiver reconstructs, dense float32 (built on demand:
        a client needs only the sparse form and the residual)."""
        out = {}
        for name, (idx, _, shape) in self.sparse.items():
            sent = np.zeros(shape, dtype=np.float32)
            sent.ravel()[idx] = self.quantised[name]
            out[name] = sent
        return out


def prune_update(update: Mapping[str, np.ndarray], residual: Mapping[str, np.ndarray] | None,
                 spec: PruneSpec, density: float,
                 rng: np.random.Generator | None = None) -> PruneResult:
    """Prune one update with optional error feedback.

    ``corrected = update + residual`` in float32 when ``spec.error_feedback``
    and a residual is given (it may omit tensors: zero; it must not have
    others, nor other shapes), else ``update`` as float32; then
    :func:`prune_corrected`.  Inputs are not modified.
    """
    corrected: dict[str, np.ndarray] = {}
    use_residual = spec.error_feedback and residual is not None
    if use_residual:
        extra = set(residual) - set(update)
        if extra:
            raise ValueError(f"residual has tensors not in the update: {sorted(extra)}")
    for name, x in update.items():
        x = np.asarray(x, dtype=np.float32)
        if use_residual and name in residual:
            r = np.asarray(residual[name], dtype=np.float32)
            if r.shape != x.shape:
                raise ValueError(f"residual {name!r} has shape {r.shape}, update {x.shape}")
            x = x + r
        elif spec.error_feedback:
            x = np.array(x, order="C")  # a copy: prune_corrected makes it the residual
        corrected[name] = x
    return prune_corrected(corrected, spec, density, rng)


def prune_corrected(corrected: dict[str, np.ndarray], spec: PruneSpec, density: float,
                    rng: np.random.Generator | None = None) -> PruneResult:
    """Keep the entries :func:`select` picks from ``corrected`` (float32,
    C-contiguous) and quantise them with ``spec.value_codec``.  With error
    feedback ``corrected`` is consumed: each array becomes its new residual,
    ``corrected - sent_dense``, formed in place (the quantised values
    subtracted at the kept entries; ``x - 0`` is ``x`` for every float, -0.0
    included), so no model-sized array is allocated here."""
    kept = keep(corrected, spec, density, rng)
    sparse, quantised, new_residual = {}, {}, {}
    for name, x in corrected.items():
        idx = kept[name]
        vals = x.ravel()[idx]  # a copy (fancy indexing)
        try:
            q = quantise(vals, spec.value_codec)
        except ValueError as exc:
            raise ValueError(f"tensor {name!r}: {exc}") from exc
        sparse[name] = Sparse(idx, vals, tuple(int(d) for d in x.shape))
        quantised[name] = q
        if spec.error_feedback:
            x.ravel()[idx] = vals - q
            new_residual[name] = x
        else:
            new_residual[name] = np.zeros(x.shape, np.float32)
    return PruneResult(sparse=sparse, residual=new_residual, quantised=quantised)
