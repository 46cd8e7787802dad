"""What the server holds reveals: an honest-but-curious server's guess of a client's items.

A measurement, not a feature: run only when `leakage-sample` > 0, reading only
what the server holds (the decoded update, the rows a client asked for, its
example count; under secure aggregation its masked input and the round's
sum). The client's true training items come from the data split and are
used for scoring alone. Attacks on one reply, on a seeded sample of
`leakage-sample` of each round's replies, each a score per item (higher:
more likely one of the client's items):

* `membership`: the rows the update touches (guess: all of them);
* `norm`: rows by the norm of their update;
* `direction`: rows along the main direction of the item-embedding update
  (one SVD): positives move toward the user vector, sampled negatives away
  from it, and the positives are the minority side;
* `bias`: rows by their item-bias update (a positive's bias is pushed up, a
  sampled negative's down), models with an item bias only;
* `request`: the rows the client asked for (per-client broadcasts only).

Linking: the server knows which client sent each reply. `leakage-sample`
clients, drawn once from the seed, are tracked for the whole run; after each
of their replies the server's linked view of the client is attacked:

* `link-sum-bias`, `link-sum-direction`: `bias` and `direction` on the sum of
  all the client's replies so far (decoys paid back through error feedback
  cancel in it);
* `link-votes`: rows by how many of its replies pushed their bias up (ties by
  the summed bias), guessing the top |P| of those pushed up in at least two
  of them (in its one reply, after the first);
* `link-request`: the rows in every one of its requests (guess: all of them).

Under secure aggregation (`server.federation`, its secure rounds) the same
attacks run on each client's masked input decoded as if it were its update
(uniformly random ring elements: chance figures expected) and on linked sums
of those; and `round-bias`, `round-direction`: the attacks on the round's
recovered mean step, scored against each sampled member's items.

Each is scored by precision and recall of its guess (the top |P| rows, |P|
being the client's number of items, which the reply's example count tells the
server; `membership`, `request`, `link-request` guess every row they mark) and
by AUC over all items; beside them the chance precision, |P| / items, averaged
over the same clients (`leak-random-precision` for the sampled replies,
`leak-link-random-precision` for the tracked ones), and the precision of a
guess that knows nothing of the client but every other client's items: its
top |P| items by how many other clients hold them (`leak-popularity-precision`,
`leak-link-popularity-precision`). A server that learns nothing of a client
beyond what the population reveals scores near the popularity guess, which
on a skewed catalogue is well above chance. In the last round, every
tracked client's final linked view is scored too (`leak-final-link-*`, with
`leak-final-random-precision`). The linked state is part of the checkpoint.
"""

from __future__ import annotations

import numpy as np

from prunus.common.config import ConfigError
from prunus.common.params import Params
from prunus.common.update import Update, to_dense

ATTACKS = ("membership", "norm", "direction", "bias", "request")
LINKS = ("link-sum-bias", "link-sum-direction", "link-votes", "link-request")
GUESS_ALL = ("membership", "request", "link-request")  # attacks whose guess is every marked row
GUESS_TOP_MARKED = ("link-votes",)  # attacks whose guess is the top |P| of the rows scored >= 0

Reply = tuple[int, Update, "np.ndarray | None"]  # (partition, decoded update, rows it asked for or None)


def item_rows(update: Update, item_tables: tuple[str, ...]) -> np.ndarray:
    """The update of the item tables side by side: one row per item."""
    parts = [to_dense(update[name]) for name in item_tables if name in update]
    return np.concatenate([part.reshape(len(part), -1) for part in parts], axis=1).astype(np.float64)


def direction(rows: np.ndarray, embedding_width: int) -> np.ndarray:
    """The touched rows' projection on the main direction of their embedding
    update, the minority side positive (untouched rows: -inf)."""
    touched = rows.any(axis=1)
    out = np.full(len(rows), -np.inf)
    moved = rows[touched, :embedding_width]
    if len(moved) >= 2 and moved.any():
        _, _, vt = np.linalg.svd(moved, full_matrices=False)
        projection = moved @ vt[0]
        if (projection > 0).sum() > (projection < 0).sum():  # the positives are the minority side
            projection = -projection
        out[touched] = projection
    return out


def attack_scores(rows: np.ndarray, embedding_width: int, request: np.ndarray | None = None,
                  bias_column: int | None = None) -> dict[str, np.ndarray]:
    """Per attack, a score per item. `rows`: `item_rows` of one reply; its first
    `embedding_width` columns are the item embedding (the direction attack's),
    column `bias_column` the item bias (the bias attack's)."""
    scores = {"membership": rows.any(axis=1).astype(np.float64), "norm": np.linalg.norm(rows, axis=1),
              "direction": direction(rows, embedding_width)}
    if bias_column is not None:
        scores["bias"] = rows[:, bias_column].copy()
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
        if name in GUESS_TOP_MARKED:
            guess &= score >= 0
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
    """Runs the attacks on a seeded sample of each round's replies, and the
    linking attacks on a seeded sample of clients tracked over the run."""

    STATE = ("tracked", "replies", "requests", "sum", "votes", "request")

    def __init__(self, sample: int, seed: int, items_of: dict[int, np.ndarray], item_tables: tuple[str, ...],
                 embedding_width: int, bias_column: int | None = None) -> None:
        self.sample, self.seed = sample, seed
        self.items_of = items_of  # partition -> its users' training items (ground truth, scoring only)
        self.item_tables, self.embedding_width, self.bias_column = item_tables, embedding_width, bias_column
        candidates = sorted(p for p, items in items_of.items() if len(items))
        rng = np.random.default_rng([seed, 29])
        self.tracked = sorted(candidates[i] for i in rng.choice(len(candidates), min(sample, len(candidates)),
                                                                   replace=False))
        held = [items for items in items_of.values() if len(items)]
        self.popularity = np.bincount(np.concatenate(held)) if held else np.zeros(0, np.int64)  # clients per item
        self.slot = {p: i for i, p in enumerate(self.tracked)}
        # the linked state of each tracked client, allocated at the first reply (its rows' shape)
        self.replies = np.zeros(len(self.tracked), np.int64)  # replies linked
        self.requests = np.zeros(len(self.tracked), np.int64)  # requests linked
        self.sums: np.ndarray | None = None  # (tracked, items, columns): its replies summed
        self.votes: np.ndarray | None = None  # (tracked, items): how many of its replies pushed a bias up
        self.asked: np.ndarray | None = None  # (tracked, items): in every one of its requests

    def measure(self, server_round: int, replies: list[Reply], round_sum: Update | None = None,
                final: bool = False) -> dict[str, float]:
        """`replies`: (partition, what the server decoded of its reply, rows it
        asked for or None), in partition order; `round_sum`: the round's step,
        when the server sees nothing finer (secure aggregation). Links the
        tracked clients' replies; `final`: also scores every tracked client's
        linked view. Returns `leak-<attack>-<precision|recall|auc>` means."""
        totals: dict[str, list[float]] = {}
        if replies:
            rng = np.random.default_rng([self.seed, server_round, 17])
            chosen = np.sort(rng.choice(len(replies), min(self.sample, len(replies)), replace=False))
            summed = None if round_sum is None else self._scores(item_rows(round_sum, self.item_tables))
            for index in chosen:
                partition, update, request = replies[index]
                self._score(totals, self._scores(item_rows(update, self.item_tables), request), partition)
                if summed is not None:  # the round's step, attributed to each of its members
                    self._score(totals, {k: summed[k] for k in ("bias", "direction") if k in summed}, partition,
                                "round-", None)
        for partition, update, request in replies:
            if partition in self.slot:
                self._link(self.slot[partition], item_rows(update, self.item_tables), request)
                self._score(totals, self.linked_scores(partition), partition, chance="link-random")
        if final:
            for partition in self.tracked:
                if self.replies[self.slot[partition]]:
                    self._score(totals, self.linked_scores(partition), partition, "final-", "final-random")
        return {key: float(np.nanmean(values)) for key, values in totals.items()}

    def _scores(self, rows: np.ndarray, request: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return attack_scores(rows, self.embedding_width, request, self.bias_column)

    def _score(self, totals: dict[str, list[float]], scores: dict[str, np.ndarray], partition: int,
               prefix: str = "", chance: str | None = "random") -> None:
        """Each attack's figures against the partition's items (`leak-<prefix><attack>-*`), and chance's precision
        over the same clients (`leak-<chance>-precision`)."""
        positives = self.items_of[partition]
        if not len(positives) or not scores:
            return
        if chance:
            n_items = len(next(iter(scores.values())))
            totals.setdefault(f"leak-{chance}-precision", []).append(len(positives) / n_items)
            popular = chance.replace("random", "popularity")
            totals.setdefault(f"leak-{popular}-precision", []).append(self._popularity_precision(positives, n_items))
        for attack, score in scores.items():
            for measure, value in score_attack(attack, score, positives).items():
                totals.setdefault(f"leak-{prefix}{attack}-{measure}", []).append(value)

    def _popularity_precision(self, positives: np.ndarray, n_items: int) -> float:
        """Precision of the top |P| items by how many *other* clients hold them (ties broken by item id)."""
        others = np.zeros(n_items)
        known = min(n_items, len(self.popularity))
        others[:known] = self.popularity[:known]
        others[positives] -= 1  # the client's own items, left out of what the guess knows
        return score_attack("popularity", others, positives)["precision"]

    def _link(self, slot: int, rows: np.ndarray, request: np.ndarray | None) -> None:
        if self.sums is None:
            self.sums = np.zeros((len(self.tracked), *rows.shape))
            self.votes = np.zeros((len(self.tracked), len(rows)), np.int64)
            self.asked = np.zeros((len(self.tracked), len(rows)), bool)
        self.sums[slot] += rows
        self.replies[slot] += 1
        if self.bias_column is not None:
            self.votes[slot] += rows[:, self.bias_column] > 0
        if request is not None:
            marked = np.zeros(len(rows), bool)
            marked[request] = True
            self.asked[slot] = marked if not self.requests[slot] else self.asked[slot] & marked
            self.requests[slot] += 1

    def linked_scores(self, partition: int) -> dict[str, np.ndarray]:
        """The linking attacks' scores on a tracked client's replies so far."""
        slot = self.slot[partition]
        summed = self.sums[slot]
        scores = {"link-sum-direction": direction(summed, self.embedding_width)}
        if self.bias_column is not None:
            bias = summed[:, self.bias_column]
            scores["link-sum-bias"] = bias.copy()
            order = np.argsort(np.argsort(bias, kind="stable"), kind="stable") / len(bias)  # in [0, 1)
            # votes, ties by the summed bias, less the threshold: the eligible rows score >= 0
            scores["link-votes"] = self.votes[slot] + 0.5 * order - min(2, int(self.replies[slot]))
        if self.requests[slot]:
            scores["link-request"] = self.asked[slot].astype(np.float64)
        return scores

    # ---------------------------------------------------------- checkpoint
    def state(self) -> Params:
        """The linked state, for the checkpoint (`server.checkpoint`)."""
        if self.sums is None:
            return {}
        return {"tracked": np.asarray(self.tracked, np.int64), "replies": self.replies, "requests": self.requests,
                "sum": self.sums, "votes": self.votes, "request": self.asked.astype(np.uint8)}

    def restore(self, state: Params) -> None:
        """Take up a checkpoint's linked state, checked against this meter (ConfigError naming what is wrong)."""
        if not state:
            return
        what = "--resume: the checkpoint's leakage state"
        if set(state) != set(self.STATE):
            raise ConfigError(f"{what} is not exactly {', '.join(self.STATE)}")
        if state["tracked"].tolist() != self.tracked:
            raise ConfigError(f"{what} tracks other clients than this config's")
        k, sums = len(self.tracked), state["sum"]
        if sums.dtype.kind != "f" or sums.ndim != 3 or len(sums) != k:
            raise ConfigError(f"{what}: sum is {sums.dtype} {sums.shape}, not ({k}, items, columns) floats")
        counts = {name: state[name] for name in ("replies", "requests", "votes", "request")}
        for name, value in counts.items():
            shape = (k,) if name in ("replies", "requests") else sums.shape[:2]
            if value.dtype.kind not in "iu" or value.shape != shape:
                raise ConfigError(f"{what}: {name} is {value.dtype} {value.shape}")
            if (value < 0).any():
                raise ConfigError(f"{what}: {name} holds negative counts")
        if (counts["votes"] > counts["replies"][:, None]).any() or (counts["request"] > 1).any():
            raise ConfigError(f"{what}: votes or request beyond the replies linked")
        self.replies, self.requests = counts["replies"].astype(np.int64), counts["requests"].astype(np.int64)
        self.sums, self.votes = sums.astype(np.float64), counts["votes"].astype(np.int64)
        self.asked = counts["request"].astype(bool)
