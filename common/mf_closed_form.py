"""MF's local update in closed form: the same training as `common.training`, in numpy.

A client's round of matrix factorisation is about a million floating-point
operations (165 positives x 4 negatives x d=32, a few steps): microseconds of
arithmetic that PyTorch's eager mode turns into ~25 ms of per-call overhead
(model construction, seeding, autograd on tiny tensors). MF's gradients are
closed-form, so this module computes them directly, on the rows the round
touches only:

1. user vectors (private) are re-fitted with Adam, items fixed, full batch,
   each user's loss averaged over its own samples (`common.training.fold_in`);
2. item rows and biases train with SGD, users fixed, in shuffled batches of
   `batch-size` positives with fresh negatives (`common.training.train`,
   reduction "sum");
3. the update is `local - global` on the touched rows, zero elsewhere.

Losses (BCE, BPR) and the L2 / L1 terms on touched rows are those of
`common.training._per_positive_loss`; `tests/common/test_mf_closed_form.py` checks
the gradients against PyTorch's autograd. Randomness (user initialisation,
negatives, batch order) comes from numpy generators seeded by (seed, round,
partition) alone, so a run is repeatable whatever process runs a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from prunus.common.config import Config
from prunus.common.training import TrainSettings

ITEMS, BIAS, USERS = "item_embedding.weight", "item_bias.weight", "user_embedding.weight"
INIT_STD = 0.1  # as MatrixFactorization's user table
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults
CHUNK_CELLS = 1 << 20  # user-item scores per chunk of the server's fold-in


@dataclass
class Rows:
    """The item parameters a step reads (never written: training returns its delta)."""

    vectors: np.ndarray  # (n_items, d) float32
    bias: np.ndarray  # (n_items,) float32


def closed_form(cfg: Config) -> bool:
    """Whether a run uses this module (its clients' step, and the server's
    fold-in for central evaluation) rather than the PyTorch reference: MF
    trained with SGD, unless `local-trainer = "torch"` asks for the reference."""
    t = cfg.training
    return cfg.model.model == "mf" and t.local_optimizer == "sgd" and t.local_trainer == "auto"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x), stable for any x (numpy's vectorised exp and log1p: faster than logaddexp)."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def init_users(n_users: int, dim: int, seed: int, partition_id: int) -> np.ndarray:
    """A new client's user vectors, N(0, 0.1^2), from (seed, partition)."""
    rng = np.random.default_rng([seed, partition_id, 3])
    return (rng.standard_normal((n_users, dim)) * INIT_STD).astype(np.float32)


def scores(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Each sample's dot products: `u` (B, d), or (1, d) for a one-user client
    (a matrix-vector product, no gathered copy of the user); `v` (B, k+1, d).
    Returns (B, k+1)."""
    return v @ u[0] if len(u) == 1 else np.einsum("bd,bkd->bk", u, v)


def score_grads(x: np.ndarray, settings: TrainSettings, need_loss: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-positive loss of B samples, each a positive and k negatives (scores
    `x` (B, k+1), the positive first), and its gradient with respect to the
    scores, (B, k+1); the loss is None unless `need_loss`. A score's gradient
    times the user vector is its item row's, and itself its bias's."""
    k = x.shape[1] - 1
    loss = None
    if settings.loss == "bce":  # softplus(-pos) + sum of softplus(neg), over k+1
        half, grad = _bce_factors(k)
        if need_loss:
            loss = softplus(x * (2 * half)).sum(1) / (k + 1)
        return loss, (np.tanh(x * half) + 1) * grad  # sigmoid(-pos) and sigmoid(neg), signed, over k+1
    diff = x[:, :1] - x[:, 1:]  # bpr: mean over the k pairs of -log sigmoid(pos - neg)
    if need_loss:
        loss = softplus(-diff).mean(1)
    g_neg = sigmoid(-diff) / k
    return loss, np.concatenate([-g_neg.sum(1, keepdims=True), g_neg], axis=1)


@lru_cache(maxsize=None)
def _bce_factors(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a sample, the factor of its score inside the tanh of
    sigmoid(-s) = (1 + tanh(-s/2)) / 2 for the positive, sigmoid(s) for a negative,
    and its gradient's factor, sign / (2 (k+1)): one fused expression per batch."""
    signs = np.array([1.0] + [-1.0] * k, dtype=np.float32)
    return -0.5 * signs, -0.5 * signs / (k + 1)


def samples(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Item ids of each sample, the positive first: (..., B, k+1) from `pos`
    (B,) and `neg` (..., B, k)."""
    out = np.empty((*neg.shape[:-1], neg.shape[-1] + 1), dtype=neg.dtype)
    out[..., 0] = pos
    out[..., 1:] = neg
    return out


def _penalty(x: np.ndarray, settings: TrainSettings) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The L2 / L1 terms of rows `x` (..., d): `(value (...), gradient (..., d))`,
    or (0.0, 0.0) without either."""
    value: np.ndarray | float = 0.0
    grad: np.ndarray | float = 0.0
    if settings.l2 > 0:
        value, grad = value + settings.l2 * (x * x).sum(-1), grad + settings.l2 * 2.0 * x
    if settings.l1 > 0:
        value, grad = value + settings.l1 * np.abs(x).sum(-1), grad + settings.l1 * np.sign(x)
    return value, grad


def _regularised(settings: TrainSettings) -> bool:
    return settings.l2 > 0 or settings.l1 > 0


def fold_in_users(users: np.ndarray, local_users: np.ndarray, pos: np.ndarray, negs: np.ndarray | list[np.ndarray],
                  rows: Rows, settings: TrainSettings, lr: float) -> np.ndarray:
    """Adam on the user vectors, items fixed, one full-batch step per negative
    sample in `negs` (item ids (n, k) each); each user's loss is the mean over
    its own samples plus, as in `_per_positive_loss`, the penalty on its row
    once per sample. Returns the new vectors.

    A step scores every (user, item) pair with one matrix product, reads the
    samples' scores from it, and forms the gradient as one product of the
    per-(user, item) summed score gradients with the item table: a few
    hundred microseconds for a client, and the same code folds in thousands
    of users at once for central evaluation (`fold_in_all`)."""
    users = users.copy()
    n_users, n_items = len(users), len(rows.bias)
    counts = np.bincount(local_users, minlength=n_users)
    weights = (1.0 / np.maximum(counts, 1))[local_users, None]  # each user's samples average
    cells = local_users[:, None] * n_items  # + item id: the sample's (user, item) cell
    m, v = np.zeros_like(users), np.zeros_like(users)
    b1, b2 = ADAM_BETAS
    for step, ids in enumerate(samples(pos, np.asarray(negs)), start=1):
        at = cells + ids  # each sample's (user, item) cell
        scores_all = users @ rows.vectors.T + rows.bias  # (users, items)
        _, g = score_grads(scores_all.ravel()[at], settings, need_loss=False)
        per_cell = np.bincount(at.ravel(), (g * weights).ravel(), minlength=n_users * n_items)
        grad = per_cell.reshape(n_users, n_items).astype(np.float32) @ rows.vectors
        if _regularised(settings):  # a user's sample weights sum to one
            grad = grad + _penalty(users, settings)[1] * (counts > 0)[:, None]
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        denom = np.sqrt(v) / np.sqrt(1 - b2**step) + ADAM_EPS
        users -= (lr / (1 - b1**step)) * m / denom
    return users


def train_items(users: np.ndarray, local_users: np.ndarray, pos: np.ndarray, batches: list[tuple[np.ndarray, np.ndarray]],
                rows: Rows, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray, float]:
    """SGD on the item rows and biases, users fixed; each batch is (positions
    into the interactions, negative item ids (B, k)). Returns the change of the
    rows, of the biases (zero where no batch reached) and the mean batch loss
    (summed over a batch's positives)."""
    if len(users) == 1 and not _regularised(settings):
        return _train_one_user(users[0], pos, batches, rows, settings)
    vectors, bias = rows.vectors.copy(), rows.bias.copy()
    total = 0.0
    n_rows, n_users = len(bias), len(users)
    for idx, neg in batches:
        ids, k = samples(pos[idx], neg), neg.shape[1]
        u, v_all = users if n_users == 1 else users[local_users[idx]], vectors[ids]
        loss, g = score_grads(scores(u, v_all) + bias[ids], settings)
        occurrences = np.bincount(ids.ravel(), minlength=n_rows)
        touched = np.flatnonzero(occurrences)
        # d loss / d row = sum over its occurrences of score gradient x user vector:
        # per (row, user) sums of the score gradients, times the user vectors
        pairs = ids.ravel() if n_users == 1 else (ids * n_users + local_users[idx][:, None]).ravel()
        per_pair = np.bincount(pairs, weights=g.ravel(), minlength=n_rows * n_users).reshape(n_rows, n_users)[touched]
        step_v = per_pair @ users
        if _regularised(settings):  # each occurrence's penalty, divided by k+1 as in `_per_positive_loss`
            # a row's penalty is the same at each of its occurrences: computed once
            # per touched row, its gradient times the row's occurrences
            value, grad = _penalty(vectors[touched], settings)
            row_value = np.zeros(n_rows, dtype=value.dtype)
            row_value[touched] = value
            loss = loss + (row_value[ids].sum(1) + (k + 1) * _penalty(u, settings)[0]) / (k + 1)
            step_v += grad * (occurrences[touched] / (k + 1))[:, None]
        vectors[touched] -= (settings.lr * step_v).astype(np.float32)
        bias[touched] -= (settings.lr * per_pair.sum(1)).astype(np.float32)
        total += float(loss.sum())
    return vectors - rows.vectors, bias - rows.bias, total / max(len(batches), 1)


def _train_one_user(u: np.ndarray, pos: np.ndarray, batches: list[tuple[np.ndarray, np.ndarray]], rows: Rows,
                    settings: TrainSettings) -> tuple[np.ndarray, np.ndarray, float]:
    """`train_items` for one user without a penalty, on scores alone: with the
    user fixed, a step moves row r by -lr c u and its bias by -lr c (c: the
    row's summed score gradient), so its score by -lr c (|u|^2 + 1). The batches
    run on the scores and accumulate each row's c; the rows move once, at the end."""
    base = rows.vectors @ u + rows.bias
    moved = np.zeros_like(rows.bias)  # each row's summed score gradient so far
    shrink = np.float32(settings.lr * (float(u @ u) + 1.0))
    total = 0.0
    for idx, neg in batches:
        ids = samples(pos[idx], neg)
        loss, g = score_grads(base[ids] - shrink * moved[ids], settings)
        moved += np.bincount(ids.ravel(), g.ravel(), minlength=len(moved))
        total += float(loss.sum())
    touched = np.flatnonzero(moved)
    d_vectors, d_bias = np.zeros_like(rows.vectors), np.zeros_like(rows.bias)
    d_bias[touched] = -settings.lr * moved[touched]
    d_vectors[touched] = d_bias[touched, None] * u
    return d_vectors, d_bias, total / max(len(batches), 1)


def local_update_mf(global_shared: dict[str, np.ndarray], private: dict[str, np.ndarray] | None,
                    local_users: np.ndarray, items: np.ndarray, n_users: int, settings: TrainSettings,
                    refit_steps: int, user_lr: float, seed: int, server_round: int,
                    partition_id: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """One client's round of MF: `(delta of the shared tables, new private state, loss)`.
    The delta is exactly zero on the rows no step touched."""
    table, bias = global_shared[ITEMS], global_shared[BIAS]
    n_items = len(table)
    users = private[USERS] if private is not None else init_users(n_users, table.shape[1], seed, partition_id)
    rng = np.random.default_rng([seed, server_round, partition_id, 0])
    n, k = len(items), settings.num_negatives
    pool = settings.negative_pool

    def negatives(shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(0, n_items, shape) if pool is None else pool[rng.integers(0, len(pool), shape)]

    rows = Rows(table, bias[:, 0])
    if refit_steps:
        users = fold_in_users(users, local_users, items, negatives((refit_steps, n, k)), rows, settings, user_lr)
    batches = []
    for _ in range(settings.epochs):
        order, drawn = rng.permutation(n), negatives((n, k))
        batches += [(order[s:s + settings.batch_size], drawn[s:s + settings.batch_size])
                    for s in range(0, n, settings.batch_size)]  # fmt: skip
    d_vectors, d_bias, loss = train_items(users, local_users, items, batches, rows, settings)
    return {ITEMS: d_vectors, BIAS: d_bias[:, None]}, {USERS: users}, loss


def fold_in_all(table: np.ndarray, bias: np.ndarray, users_of: np.ndarray, items: np.ndarray, n_users: int,
                settings: TrainSettings, steps: int, lr: float, seed: int, chunk: int | None = None) -> np.ndarray:
    """Every user's vector folded in from its training interactions (`users_of`
    sorted, `items` beside it), the item parameters fixed: the server's central
    evaluation of MF. Users are independent, so they go in chunks (default:
    about a million user-item scores each) that bound memory; negatives come
    from (seed, chunk) alone."""
    n_items, dim = table.shape
    chunk = chunk or max(1, CHUNK_CELLS // n_items)
    rows = Rows(table, bias[:, 0])
    users = (np.random.default_rng([seed, 0xE7A1]).standard_normal((n_users, dim)) * INIT_STD).astype(np.float32)
    bounds = np.searchsorted(users_of, np.arange(n_users + 1))
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        low, high = bounds[start], bounds[stop]
        if low == high:
            continue
        rng = np.random.default_rng([seed, 0xE7A1, start])
        negs = rng.integers(0, n_items, (steps, high - low, settings.num_negatives))
        users[start:stop] = fold_in_users(users[start:stop], users_of[low:high] - start, items[low:high], negs, rows,
                                          settings, lr)
    return users
