"""What a reply reveals: an honest-but-curious server's guess of a client's items.

A measurement, not a feature: run only when `leakage-sample` > 0, on a seeded
sample of each round's accepted replies, reading only what the server
received (the decoded update, the rows a client asked for, its example
count). The client's true training items come from the data split and are
used for scoring alone. Attacks, each a score per item (higher: more likely
one of the client's items):

* `membership`: the rows the update touches (guess: all of them);
* `norm`: rows by the norm of their update;
* `direction`: rows along the main direction of the item-embedding update
  (one SVD): positives move toward the user vector, sampled negatives away
  from it, and the positives are the minority side;
* `request`: the rows the client asked for (per-client broadcasts only).

Each is scored by precision and recall of its guess (the top |P| rows, |P|
being the client's number of items, which the reply's example count tells the
server; `membership` and `request` guess every row they mark) and by AUC over
all items.
"""

from __future__ import annotations

import numpy as np

from prunus.common.update import Update, to_dense

ATTACKS = ("membership", "norm", "direction", "request")
GUESS_ALL = ("membership", "request")  # attacks whose guess is every marked row


def item_rows(update: Update, item_tables: tuple[str, ...]) -> np.ndarray:
    """The update of the item tables side by side: one row per item."""
    parts = [to_dense(update[name]) for name in item_tables if name in update]
    return np.concatenate([part.reshape(len(part), -1) for part in parts], axis=1).astype(np.float64)


def attack_scores(rows: np.ndarray, embedding_width: int, request: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per attack, a score per item. `rows`: `item_rows` of one reply; its first
    `embedding_width` columns are the item embedding (the direction attack's)."""
    touched = rows.any(axis=1)
    scores = {"membership": touched.astype(np.float64), "norm": np.linalg.norm(rows, axis=1)}
    direction = np.full(len(rows), -np.inf)
    moved = rows[touched, :embedding_width]
    if len(moved) >= 2 and moved.any():
        _, _, vt = np.linalg.svd(moved, full_matrices=False)
        projection = moved @ vt[0]
        if (projection > 0).sum() > (projection < 0).sum():  # the positives are the minority side
            projection = -projection
        direction[touched] = projection
    scores["direction"] = direction
    if request is not None:
        marked = np.zeros(len(rows))
        marked[request] = 1.0
        scores["request"] = marked
    return scores


def score_attack(name: str, score: np.ndarray, positives: np.ndarray) -> dict[str, float]:
    """Precision, recall and AUC of one attack's scores against the true items."""
    truth = np.zeros(len(score), dtype=bool)
    truth[positives] = True
    if name in GUESS_ALL:
        guess = score > 0
    else:  # the top |P| rows, ties broken by item id
        guess = np.zeros(len(score), dtype=bool)
        guess[np.argsort(-score, kind="stable")[: len(positives)]] = True
    hits = int((guess & truth).sum())
    return {"precision": hits / max(int(guess.sum()), 1), "recall": hits / max(len(positives), 1), "auc": auc(score, truth)}


def auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a true item outscores a false one (ties count half)."""
    n_true, n_false = int(truth.sum()), int((~truth).sum())
    if not n_true or not n_false:
        return float("nan")
    finite = np.isfinite(score)
    score = np.where(finite, score, score[finite].min() - 1.0 if finite.any() else 0.0)  # unscored rows last
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
    return float((ranks[truth].sum() - n_true * (n_true + 1) / 2) / (n_true * n_false))


class LeakageMeter:
    """Runs the attacks on a seeded sample of each round's accepted replies."""

    def __init__(self, sample: int, seed: int, items_of: dict[int, np.ndarray], item_tables: tuple[str, ...],
                 embedding_width: int) -> None:
        self.sample, self.seed = sample, seed
        self.items_of = items_of  # partition -> its users' training items (ground truth, scoring only)
        self.item_tables, self.embedding_width = item_tables, embedding_width

    def measure(self, server_round: int, replies: list[tuple[int, Update, np.ndarray | None]]) -> dict[str, float]:
        """`replies`: (partition, decoded update, rows it asked for or None), in
        partition order. Returns `leak-<attack>-<precision|recall|auc>` means."""
        if not replies:
            return {}
        rng = np.random.default_rng([self.seed, server_round, 17])
        chosen = np.sort(rng.choice(len(replies), min(self.sample, len(replies)), replace=False))
        totals: dict[str, list[float]] = {}
        for index in chosen:
            partition, update, request = replies[index]
            positives = self.items_of[partition]
            if not len(positives):
                continue
            rows = item_rows(update, self.item_tables)
            for attack, score in attack_scores(rows, self.embedding_width, request).items():
                for measure, value in score_attack(attack, score, positives).items():
                    totals.setdefault(f"leak-{attack}-{measure}", []).append(value)
        return {key: float(np.nanmean(values)) for key, values in totals.items()}
