"""Central evaluation (`server.evaluation`): a non-finite model is never scored,
and with a lossy broadcast the model scored is the one clients decode."""

from __future__ import annotations

import numpy as np
import pytest

from prunus.common.compression import DOWNLINK, BroadcastContext
from prunus.common.config import Config
from prunus.common.datasets import load_split
from prunus.common.mf_closed_form import BIAS, ITEMS
from prunus.common.params import NonFiniteModel
from prunus.server.evaluation import CentralEvaluator

CFG = Config.of(synthetic_users=120, synthetic_items=80, dim=8, seed=2, fold_in_epochs=2, eval_negatives=20)


@pytest.fixture(scope="module")
def split():
    return load_split(CFG)


def _shared(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.normal(scale=0.3, size=(80, 8)).astype(np.float32)
    items[5, 3] = 4.0  # one large entry: int8 rounds that row coarser
    return {ITEMS: items, BIAS: rng.normal(scale=0.1, size=(80, 1)).astype(np.float32)}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("downlink", ["fp32", "int8"])
def test_a_non_finite_model_is_never_scored(split, bad, downlink):
    """An audit saw HR@10 = 1.0 recorded for a model with one NaN parameter."""
    shared = _shared()
    shared[BIAS][7, 0] = bad
    with pytest.raises(NonFiniteModel, match="item_bias"):
        CentralEvaluator(CFG.replace(downlink_codec=downlink), split)(shared, 3)


@pytest.mark.parametrize("downlink", ["fp16", "int8", "int4", "int2"])
def test_a_lossy_broadcast_is_scored_as_clients_decode_it(split, downlink):
    cfg = CFG.replace(downlink_codec=downlink)
    shared = _shared()
    evaluator = CentralEvaluator(cfg, split)
    got = evaluator(shared, 4)
    method = DOWNLINK.get(downlink)(cfg.compression)  # what a client of round 4 decodes, independently
    decoded = method.decode(method.encode(shared, BroadcastContext(4, cfg.runtime.seed)),
                            {k: v.shape for k, v in shared.items()})
    assert not all(np.array_equal(decoded[k], shared[k]) for k in shared)
    plain = CentralEvaluator(cfg.replace(eval_as_decoded="off"), split)
    assert got == plain(decoded) | {f"{k}-server": v for k, v in plain(shared).items() if k != "eval-users"}
    assert set(got) == {"hr@10", "ndcg@10", "eval-users", "hr@10-server", "ndcg@10-server"}


def test_an_exact_broadcast_is_scored_once_unless_asked(split):
    shared = _shared()
    plain = CentralEvaluator(CFG, split)(shared)
    assert "hr@10-server" not in plain and not CentralEvaluator.decodes(CFG)
    on = CentralEvaluator(CFG.replace(eval_as_decoded="on"), split)(shared)
    assert on == plain | {f"{k}-server": v for k, v in plain.items() if k != "eval-users"}  # fp32: the model itself
    assert not CentralEvaluator.decodes(CFG.replace(downlink_codec="int8", eval_as_decoded="off"))


def test_a_torch_fold_in_by_chunks_folds_every_user_as_alone(split, monkeypatch):
    """NeuMF's fold-in goes a chunk of whole users at a time: every user with
    training pairs is folded in, and a chunk's users follow the path they
    follow when that chunk is folded in by itself."""
    import torch

    from prunus.common.models import build_model
    from prunus.common.training import client_settings, fold_in, seeded_generator
    from prunus.server import evaluation

    monkeypatch.setattr(evaluation, "CHUNK_PAIRS", 97)  # many chunks, the last one partial
    cfg = CFG.replace(model="neumf", mlp_layers="8,4")
    users, items = torch.as_tensor(split.train_users), torch.as_tensor(split.train_items)

    def fresh():
        return build_model("neumf", split.n_users, split.n_items, 8, (8, 4), seed=1)

    chunked = fresh()
    evaluation.fold_in_by_chunks(chunked, users, items, client_settings(cfg), 3, 0.1, 7)
    before = fresh().private_state()["user_gmf.weight"]
    after = chunked.private_state()["user_gmf.weight"]
    moved = (after != before).any(dim=1)
    assert torch.equal(moved, torch.bincount(users, minlength=split.n_users) > 0)
    per_chunk = split.n_users * 97 // len(users)
    first = users < per_chunk
    alone = fresh()
    fold_in(alone, users[first], items[first], client_settings(cfg), 3, 0.1, seeded_generator(7, evaluation.EVAL_STREAM, 0))
    assert torch.equal(alone.private_state()["user_gmf.weight"][:per_chunk], after[:per_chunk])
