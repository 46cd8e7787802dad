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
from prunus.common.compression import DOWNLINK, UPLINK, BroadcastContext, RoundContext
from prunus.common.config import Config
from prunus.common.datasets import load_split, partitions
from prunus.common.models import build_model, model_spec
from prunus.common.payload import ConfigMap, Content
from prunus.common.update import Dense
from prunus.server.leakage import LeakageMeter, attack_scores, auc, item_rows, score_attack

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
        update = UPLINK.get(cfg.compression.prune_method)(cfg.compression).decode(reply["arrays"], spec.shapes,
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
    meter = LeakageMeter(3, 0, {p: positives for p, (_, positives) in enumerate(replies)}, ("x",), 16)
    updates = [(p, {"x": Dense(rows.astype(np.float32))}, None) for p, (rows, _) in enumerate(replies)]
    first, again = meter.measure(4, updates), meter.measure(4, updates)
    assert first == again and first != meter.measure(5, updates)
    assert set(first) == {f"leak-{a}-{m}" for a in ("membership", "norm", "direction") for m in ("precision", "recall", "auc")}
