"""The honest-but-curious server's attacks (`server.leakage`): they reproduce
on real client replies over synthetic data with planted factors, and their
scores are what their definitions say."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.client import handlers
from prunus.client.handlers import ClientData
from prunus.common.compression import DOWNLINK, UPLINK, BroadcastContext, RoundContext, make
from prunus.common.config import Config, ConfigError
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model, model_spec
from prunus.common.payload import ConfigMap, Content
from prunus.common.update import Dense
from prunus.server import checkpoint as ckpt
from prunus.server.leakage import ATTACKS, LINKS, LeakageMeter, attack_scores, auc, item_rows, score_attack
from prunus.server.ledger import Ledger

CFG = Config.of(synthetic_users=40, synthetic_items=1000, synthetic_interactions=25.0, dim=16, train_negatives=4)


def _replies(cfg: Config, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(item rows of a round-1 dense reply, the client's true items) for `count` clients."""
    split = load_split(cfg)
    spec = model_spec(cfg.model, split.n_items)
    params = {k: v.numpy() for k, v in build_model("mf", 1, split.n_items, cfg.model.dim, seed=0).shared_state().items()}
    content = Content({"arrays": DOWNLINK.get("fp32")(cfg.compression).encode(params, BroadcastContext(1, 0)),
                          "config": ConfigMap({"server-round": 1})})
    out = []
    for p in range(count):
        client = ClientData.of(p, split, np.asarray(partitions(cfg)[p]), torch.device("cpu"))
        reply = handlers.train(cfg, content, Content(), client)
        update = make(UPLINK, cfg.compression.prune_method, cfg).decode(reply["arrays"], spec.shapes,
                                                                        RoundContext(1, p, 0))
        out.append((item_rows(update, spec.item_tables), np.unique(client.data.items)))
    return out


def test_the_direction_attack_names_a_dense_replys_items():
    """One SVD of a dense reply's item rows: the positives are its minority side."""
    precision = {attack: [] for attack in ("membership", "norm", "direction")}
    for rows, positives in _replies(CFG, 12):
        for attack, score in attack_scores(rows, 16).items():
            precision[attack].append(score_attack(attack, score, positives)["precision"])
    mean = {attack: float(np.mean(values)) for attack, values in precision.items()}
    assert mean["direction"] >= 0.9
    assert mean["membership"] < 0.3 and mean["norm"] < mean["direction"]  # positives hide among sampled negatives


def test_pruning_changes_what_the_direction_attack_sees():
    pruned = CFG.replace(prune_method="topk-global", density=0.02, value_codec="int8")
    dense = np.mean([score_attack("direction", attack_scores(r, 16)["direction"], p)["precision"] for r, p in _replies(CFG, 6)])
    sparse = np.mean([score_attack("direction", attack_scores(r, 16)["direction"], p)["precision"]
                      for r, p in _replies(pruned, 6)])
    assert sparse < dense


def test_membership_and_request_guess_every_row_they_mark():
    score = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    got = score_attack("request", score, np.array([0, 1]))
    assert got["precision"] == pytest.approx(1 / 3) and got["recall"] == 0.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auc_is_the_chance_a_true_item_outscores_a_false_one(pairs):
    score = np.array([float(s) for s, _ in pairs])
    truth = np.array([t for _, t in pairs])
    if truth.all() or not truth.any():
        assert np.isnan(auc(score, truth))
        return
    expected = np.mean([(a > b) + 0.5 * (a == b) for a, b in product(score[truth], score[~truth])])
    assert auc(score, truth) == pytest.approx(expected)


def test_the_meter_samples_replies_by_seed_and_round():
    replies = _replies(CFG, 6)
    items_of = {p: positives for p, (_, positives) in enumerate(replies)}
    updates = [(p, {"x": Dense(rows.astype(np.float32))}, None) for p, (rows, _) in enumerate(replies)]

    def meter() -> LeakageMeter:
        return LeakageMeter(3, 0, items_of, ("x",), 16)

    first, again = meter().measure(4, updates), meter().measure(4, updates)
    assert first == again and first != meter().measure(5, updates)
    single = {f"leak-{a}-{m}" for a in ("membership", "norm", "direction") for m in ("precision", "recall", "auc")}
    linked = {f"leak-link-sum-direction-{m}" for m in ("precision", "recall", "auc")}
    baselines = {f"leak-{c}-precision" for c in ("random", "link-random", "popularity", "link-popularity")}
    assert set(first) == single | linked | baselines
    assert len(meter().tracked) == 3  # `leakage-sample` clients tracked, drawn once from the seed


def test_the_bias_attack_names_a_replys_items_pruned_or_not():
    """A positive's bias is pushed up, a sampled negative's down: even a top-k
    reply keeps most of them (the bias column is never pruned away here)."""
    pruned = CFG.replace(prune_method="topk-global", density=0.02, value_codec="int8")
    for cfg in (CFG, pruned):
        got = [(score_attack("bias", attack_scores(r, 16, bias_column=16)["bias"], p)["precision"], len(p) / len(r))
               for r, p in _replies(cfg, 8)]
        precision, chance = np.mean(got, axis=0)
        assert precision >= 0.8 > 10 * chance


N_ITEMS, WIDTH = 200, 5  # constructed replies: 4 embedding columns and the item bias


def _constructed(positives: np.ndarray, rng: np.random.Generator, decoys: np.ndarray = np.array([], int),
                 repay: np.ndarray = np.array([], int)) -> np.ndarray:
    """A reply's item rows: the positives' bias up and embedding toward the user,
    as many sampled negatives the other way, decoys moved like positives,
    `repay`'s earlier push taken back."""
    user = np.array([1.0, -2.0, 0.5, 1.5])
    rows = np.zeros((N_ITEMS, WIDTH))
    negatives = rng.choice(np.setdiff1d(np.arange(N_ITEMS), positives), 4 * len(positives), replace=False)
    for ids, sign in ((positives, 1.0), (decoys, 1.0), (negatives, -1.0), (repay, -1.0)):
        scale = rng.uniform(0.5, 1.5, (len(ids), 1))
        rows[ids] += sign * scale * np.append(user, 1.0)
    return rows


def test_constructed_replies_bias_up_on_exactly_the_positives_score_one_random_ones_chance():
    rng = np.random.default_rng(0)
    positives = np.sort(rng.choice(N_ITEMS, 20, replace=False))
    scores = attack_scores(_constructed(positives, rng), 4, bias_column=4)
    perfect = {"precision": 1.0, "recall": 1.0, "auc": 1.0}
    assert score_attack("bias", scores["bias"], positives) == pytest.approx(perfect)
    assert score_attack("direction", scores["direction"], positives)["precision"] == 1.0
    chance = [score_attack("bias", rng.normal(size=N_ITEMS), positives)["precision"] for _ in range(300)]
    assert np.mean(chance) == pytest.approx(20 / N_ITEMS, abs=0.02)


def _linked_run(meter: LeakageMeter, positives: dict[int, np.ndarray], rounds: range, repay: bool) -> list[dict]:
    """Every client replies each round, with as many fresh random decoys as items
    (paid back the next round with `repay`), and asks for its items and a fresh pool."""
    figures = []
    for server_round in rounds:
        replies = []
        for p, items in positives.items():
            rng = np.random.default_rng([p, server_round])
            others = np.setdiff1d(np.arange(N_ITEMS), items)
            decoys = rng.choice(others, len(items), replace=False)
            before = np.random.default_rng([p, server_round - 1]).choice(others, len(items), replace=False)
            rows = _constructed(items, rng, decoys, before if repay and server_round > 1 else np.array([], int))
            request = np.union1d(items, rng.choice(others, 4 * len(items), replace=False))
            replies.append((p, {"x": Dense(rows.astype(np.float32))}, request))
        figures.append(meter.measure(server_round, replies, final=server_round == rounds.stop - 1))
    return figures


def _positives(count: int) -> dict[int, np.ndarray]:
    return {p: np.sort(np.random.default_rng(100 + p).choice(N_ITEMS, 10, replace=False)) for p in range(count)}


@pytest.mark.parametrize("repay", [False, True])
def test_linking_a_clients_replies_strikes_out_decoys_that_change_every_round(repay):
    positives = _positives(4)
    figures = _linked_run(LeakageMeter(4, 0, positives, ("x",), 4, bias_column=4), positives, range(1, 6), repay)
    first, last = figures[0], figures[-1]
    assert first["leak-bias-precision"] == pytest.approx(0.5, abs=0.15)  # one reply: as many decoys as items
    assert first["leak-link-votes-precision"] == first["leak-link-sum-bias-precision"]  # nothing linked yet
    assert last["leak-link-votes-precision"] == 1.0  # decoys pushed up in one reply each, items in every one
    assert last["leak-link-request-precision"] >= 0.95 and last["leak-link-request-recall"] == 1.0  # pools change
    assert first["leak-link-request-precision"] < 0.3  # one request: the items and their pool
    if repay:  # paid back: a decoy's push and its repayment cancel in the sum
        assert last["leak-link-sum-bias-precision"] >= 0.9 and last["leak-link-sum-direction-precision"] >= 0.9
    assert last["leak-final-link-votes-precision"] == 1.0 and "leak-final-random-precision" in last
    assert last["leak-link-random-precision"] == last["leak-final-random-precision"] == pytest.approx(10 / N_ITEMS)


def test_the_popularity_guess_knows_only_the_other_clients_items():
    """The baseline a server reaches knowing nothing of a client but everyone
    else's items: a client holding the catalogue's popular items is guessed
    right; one holding only items nobody else has is not, its own count left out."""
    items_of = {0: np.array([0, 1]), 1: np.array([0, 1, 2]), 2: np.array([0, 1, 3]), 3: np.array([5, 6])}
    meter = LeakageMeter(4, 0, items_of, ("x",), 2)
    rows = {"x": Dense(np.ones((8, 2), np.float32))}
    figures = meter.measure(1, [(p, rows, None) for p in items_of])
    # clients 0-2 hold items 0 and 1 (guessed: precision 1, 2/3, 2/3); client 3's items are held by no one else
    assert figures["leak-popularity-precision"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)
    assert figures["leak-link-popularity-precision"] == figures["leak-popularity-precision"]


def test_the_linked_state_survives_a_checkpoint(tmp_path):
    """Resumed from a checkpoint after round 2, the meter gives rounds 3-5 the
    figures of the run that never stopped; a state edited to be impossible is refused."""
    positives = _positives(6)

    def meter() -> LeakageMeter:
        return LeakageMeter(3, 1, positives, ("x",), 4, bias_column=4)

    whole = _linked_run(meter(), positives, range(1, 6), repay=True)
    before = meter()
    _linked_run(before, positives, range(1, 3), repay=True)
    cfg = Config.of(rounds=5)
    params = {k: np.zeros(v, np.float32) for k, v in model_spec(cfg.model, load_split(cfg).n_items).shapes.items()}
    ckpt.save(tmp_path, ckpt.Checkpoint(2, params, ({}, {}), {}, Ledger(), cfg.to_dict(), before.state()))
    resumed = meter()
    resumed.restore(ckpt.load(tmp_path).leakage)
    assert _linked_run(resumed, positives, range(3, 6), repay=True) == whole[2:]
    assert ckpt.load(tmp_path).leakage["sum"].shape == (3, N_ITEMS, WIDTH)
    state = before.state()
    for edit, reason in ((lambda s: s.pop("votes"), "not exactly"),
                         (lambda s: s.update(votes=s["votes"] + 9), "beyond"),
                         (lambda s: s.update(tracked=s["tracked"] + 1), "other clients"),
                         (lambda s: s.update(sum=s["sum"][0]), "sum is")):
        edited = {k: v.copy() for k, v in state.items()}
        edit(edited)
        with pytest.raises(ConfigError, match=f"--resume: the checkpoint's leakage state.*{reason}"):
            meter().restore(edited)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 60).flatmap(lambda n: st.tuples(st.permutations(range(n)), st.permutations(range(n)),
                                                        st.integers(1, n))),
       st.sampled_from(ATTACKS + LINKS))
def test_figures_are_shares_and_do_not_depend_on_the_items_order(draw, attack):
    """Precision and recall in [0, 1], AUC too; relabelling the items (scores
    and true items alike, no ties) changes none of them."""
    values, relabel, count = draw
    score = np.array(values, dtype=np.float64) - len(values) / 3  # some below zero (link-votes' unmarked rows)
    positives = np.arange(count)
    got = score_attack(attack, score, positives)
    assert all(0.0 <= got[m] <= 1.0 for m in ("precision", "recall")) and (np.isnan(got["auc"]) or 0 <= got["auc"] <= 1)
    moved = np.empty_like(score)
    moved[np.array(relabel)] = score
    assert score_attack(attack, moved, np.array(relabel)[positives]) == pytest.approx(got, nan_ok=True)
