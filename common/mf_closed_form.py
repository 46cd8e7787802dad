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

import numpy as np

from prunus.common.config import Config
from prunus.common.training import TrainSettings

ITEMS, BIAS, USERS = "item_embedding.weight", "item_bias.weight", "user_embedding.weight"
INIT_STD = 0.1  # as MatrixFactorization's user table
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


@dataclass
class Rows:
    """The item rows a round touches (positives and every sampled negative), local copies."""

    ids: np.ndarray  # global item ids, sorted
    vectors: np.ndarray  # (len(ids), d) float32
    bias: np.ndarray  # (len(ids),) float32


def closed_form(cfg: Config) -> bool:
    """Whether a run uses this module (its clients' step, and the server's
    fold-in for central evaluation) rather than the PyTorch reference: MF
    trained with SGD, unless `local-trainer = "torch"` asks for the reference."""
    t = cfg.training
    return cfg.model.model == "mf" and t.local_optimizer == "sgd" and t.local_trainer == "auto"


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def init_users(n_users: int, dim: int, seed: int, partition_id: int) -> np.ndarray:
    """A new client's user vectors, N(0, 0.1^2), from (seed, partition)."""
    rng = np.random.default_rng([seed, partition_id, 3])
    return (rng.standard_normal((n_users, dim)) * INIT_STD).astype(np.float32)


def batch_loss_and_grads(u: np.ndarray, v_pos: np.ndarray, b_pos: np.ndarray, v_neg: np.ndarray, b_neg: np.ndarray,
                         settings: TrainSettings, need_loss: bool = True,
                         ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Per-positive loss of B positives with k negatives each, and its gradients.

    `u` (B, d): each positive's user vector; `v_pos` (B, d), `b_pos` (B,):
    its item's row and bias; `v_neg` (B, k, d), `b_neg` (B, k): its negatives'.
    Returns `(loss (B,), d loss/d u (B, d), d loss/d pos score (B,),
    d loss/d neg scores (B, k))`; a score's gradient is its item row's
    (times `u`) and its bias's. The loss is None unless `need_loss`.
    """
    k = v_neg.shape[1]
    pos = np.einsum("bd,bd->b", u, v_pos) + b_pos
    neg = np.einsum("bd,bkd->bk", u, v_neg) + b_neg
    loss = None
    if settings.loss == "bce":
        if need_loss:
            loss = (softplus(-pos) + softplus(neg).sum(1)) / (k + 1)
        g_pos = -sigmoid(-pos) / (k + 1)
        g_neg = sigmoid(neg) / (k + 1)
    else:  # bpr: mean over the k pairs of -log sigmoid(pos - neg)
        diff = pos[:, None] - neg
        if need_loss:
            loss = softplus(-diff).mean(1)
        g_neg = sigmoid(-diff) / k
        g_pos = -g_neg.sum(1)
    du = g_pos[:, None] * v_pos + np.einsum("bk,bkd->bd", g_neg, v_neg)
    return loss, du, g_pos, g_neg


def _regularise(loss: np.ndarray, du: np.ndarray, u: np.ndarray, v_pos: np.ndarray, v_neg: np.ndarray,
                settings: TrainSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray | float]:
    """L2 / L1 on the rows each positive and its negatives touch (the user row
    once per pair), divided by k+1 as in `_per_positive_loss`. Returns the
    loss (None stays None), d/du and the item rows' gradient (B, k+1, d), or
    0.0 without either."""
    if not (settings.l2 > 0 or settings.l1 > 0):
        return loss, du, 0.0
    k = v_neg.shape[1]
    rows = np.concatenate([v_pos[:, None], v_neg], axis=1)  # (B, k+1, d)
    item_grad = np.zeros_like(rows)
    for weight, power in ((settings.l2, 2), (settings.l1, 1)):
        if weight > 0:
            if loss is not None:  # the fold-in needs only the gradient
                loss = loss + weight * ((k + 1) * _norm(u, power) + _norm(rows, power).sum(1)) / (k + 1)
            du = du + weight * _norm_grad(u, power)
            item_grad = item_grad + weight * _norm_grad(rows, power) / (k + 1)
    return loss, du, item_grad


def _norm(x: np.ndarray, power: int) -> np.ndarray:
    return (np.abs(x) if power == 1 else x * x).sum(-1)


def _norm_grad(x: np.ndarray, power: int) -> np.ndarray:
    return np.sign(x) if power == 1 else 2.0 * x


def scatter_rows(target: np.ndarray, ids: np.ndarray, values: np.ndarray) -> None:
    """`target[ids] += values`, summing repeated ids (np.add.at, without its cost)."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    target[ordered[starts]] += np.add.reduceat(values[order], starts, axis=0)


def fold_in_users(users: np.ndarray, local_users: np.ndarray, pos: np.ndarray, negs: list[np.ndarray],
                  rows: Rows, settings: TrainSettings, lr: float) -> np.ndarray:
    """Adam on the user vectors, items fixed, one full-batch step per negative
    sample in `negs` (local row indices (n, k)); returns the new vectors.
    `local_users` is sorted (interactions come user by user)."""
    users = users.copy()
    counts = np.bincount(local_users, minlength=len(users))
    weights = (1.0 / counts[local_users]).astype(np.float32)[:, None]
    present = np.flatnonzero(counts)
    starts = np.concatenate(([0], np.cumsum(counts[present])[:-1]))
    m, v = np.zeros_like(users), np.zeros_like(users)
    (b1, b2), v_pos, b_pos = ADAM_BETAS, rows.vectors[pos], rows.bias[pos]
    for step, neg in enumerate(negs, start=1):
        u = users[local_users]
        v_neg = rows.vectors[neg]
        _, du, _, _ = batch_loss_and_grads(u, v_pos, b_pos, v_neg, rows.bias[neg], settings, need_loss=False)
        _, du, _ = _regularise(None, du, u, v_pos, v_neg, settings)
        if len(users) == 1:  # one user per client: a plain weighted sum
            grad = weights.T @ du
        else:
            grad = np.zeros_like(users)
            grad[present] = np.add.reduceat(du * weights, starts, axis=0)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        denom = np.sqrt(v) / np.sqrt(1 - b2**step) + ADAM_EPS
        users -= (lr / (1 - b1**step)) * m / denom
    return users


def train_items(users: np.ndarray, local_users: np.ndarray, pos: np.ndarray, batches: list[tuple[np.ndarray, np.ndarray]],
                rows: Rows, settings: TrainSettings) -> float:
    """SGD on the touched item rows and biases (in place), users fixed; each
    batch is (positions into the interactions, local negative rows (B, k)).
    Returns the mean batch loss (summed over a batch's positives)."""
    total = 0.0
    for idx, neg in batches:
        u, p = users[local_users[idx]], pos[idx]
        v_pos, v_neg = rows.vectors[p], rows.vectors[neg]
        loss, _, g_pos, g_neg = batch_loss_and_grads(u, v_pos, rows.bias[p], v_neg, rows.bias[neg], settings)
        loss, _, item_reg = _regularise(loss, np.zeros_like(u), u, v_pos, v_neg, settings)
        ids = np.concatenate([p[:, None], neg], axis=1).ravel()  # (B*(k+1),) local rows
        scores = np.concatenate([g_pos[:, None], g_neg], axis=1).ravel()  # d loss / d score, same order
        # d loss / d row = sum over its occurrences of score gradient x user vector:
        # per (row, user) sums of the score gradients, times the user vectors
        n_rows, n_users = len(rows.bias), len(users)
        pairs = ids * n_users + np.repeat(local_users[idx], neg.shape[1] + 1)
        per_pair = np.bincount(pairs, weights=scores, minlength=n_rows * n_users).reshape(n_rows, n_users)
        step_v = per_pair @ users
        if not np.isscalar(item_reg):
            scatter_rows(step_v, ids, item_reg.reshape(-1, users.shape[1]))
        rows.vectors -= (settings.lr * step_v).astype(np.float32)
        rows.bias -= (settings.lr * per_pair.sum(1)).astype(np.float32)
        total += float(loss.sum())
    return total / max(len(batches), 1)


def local_update_mf(global_shared: dict[str, np.ndarray], private: dict[str, np.ndarray] | None,
                    local_users: np.ndarray, items: np.ndarray, n_users: int, settings: TrainSettings,
                    refit_steps: int, user_lr: float, seed: int, server_round: int,
                    partition_id: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """One client's round of MF: `(delta of the shared tables, new private state, loss)`."""
    table, bias = global_shared[ITEMS], global_shared[BIAS]
    n_items, dim = table.shape
    users = private[USERS] if private is not None else init_users(n_users, dim, seed, partition_id)
    rng = np.random.default_rng([seed, server_round, partition_id, 0])
    n, k = len(items), settings.num_negatives
    pool = settings.negative_pool

    def negatives(shape: tuple[int, int]) -> np.ndarray:
        return rng.integers(0, n_items, shape) if pool is None else pool[rng.integers(0, len(pool), shape)]

    refit_negs = [negatives((n, k)) for _ in range(refit_steps)]
    batches = []
    for _ in range(settings.epochs):
        order = rng.permutation(n)
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            batches.append((idx, negatives((len(idx), k))))
    # every row the round reads, as local row indices
    ids, local = np.unique(np.concatenate([items, *(x.ravel() for x in refit_negs), *(b.ravel() for _, b in batches)]),
                           return_inverse=True)
    rows = Rows(ids, table[ids].copy(), bias[ids, 0].copy())
    cut = np.cumsum([n, *(x.size for x in refit_negs), *(b.size for _, b in batches)])
    parts = np.split(local, cut[:-1])
    pos, rest = parts[0], parts[1:]
    refit = [p.reshape(n, k) for p in rest[:refit_steps]]
    local_batches = [(idx, p.reshape(len(idx), k)) for (idx, _), p in zip(batches, rest[refit_steps:])]
    if refit_steps:
        users = fold_in_users(users, local_users, pos, refit, rows, settings, user_lr)
    loss = train_items(users, local_users, pos, local_batches, rows, settings)
    delta_table = np.zeros_like(table)
    delta_bias = np.zeros_like(bias)
    delta_table[ids] = rows.vectors - table[ids]
    delta_bias[ids, 0] = rows.bias - bias[ids, 0]
    return {ITEMS: delta_table, BIAS: delta_bias}, {USERS: users}, loss


def fold_in_all(table: np.ndarray, bias: np.ndarray, users_of: np.ndarray, items: np.ndarray, n_users: int,
                settings: TrainSettings, steps: int, lr: float, seed: int, chunk: int = 512) -> np.ndarray:
    """Every user's vector folded in from its training interactions (`users_of`
    sorted, `items` beside it), the item parameters fixed: the server's central
    evaluation of MF. Users are independent, so they go in chunks that bound
    memory; negatives come from (seed, chunk) alone."""
    n_items, dim = table.shape
    rows = Rows(np.arange(n_items), table, bias[:, 0])
    users = (np.random.default_rng([seed, 0xE7A1]).standard_normal((n_users, dim)) * INIT_STD).astype(np.float32)
    bounds = np.searchsorted(users_of, np.arange(n_users + 1))
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        low, high = bounds[start], bounds[stop]
        if low == high:
            continue
        rng = np.random.default_rng([seed, 0xE7A1, start])
        negs = [rng.integers(0, n_items, (high - low, settings.num_negatives)) for _ in range(steps)]
        users[start:stop] = fold_in_users(users[start:stop], users_of[low:high] - start, items[low:high], negs, rows,
                                          settings, lr)
    return users
