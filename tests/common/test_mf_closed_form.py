"""MF's closed-form client step against the PyTorch reference (`common.training`)."""

import dataclasses

import numpy as np
import pytest
import torch

from prunus.common import mf_closed_form as mf_update
from prunus.common import training
from prunus.common.mf_closed_form import BIAS, ITEMS, USERS, Rows, fold_in_users, local_update_mf, train_items
from prunus.common.models import build_model
from prunus.common.training import TrainSettings, fold_in, seeded_generator, train

N_USERS, N_ITEMS, DIM, K = 3, 12, 4, 3
SETTINGS = [TrainSettings(loss=loss, num_negatives=K, epochs=1, lr=0.3, batch_size=64, l2=l2, l1=l1,
                          optimizer="sgd", reduction="sum")
            for loss in ("bce", "bpr") for l2, l1 in ((0.0, 0.0), (0.05, 0.0), (0.0, 0.02))]  # fmt: skip


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    model = build_model("mf", N_USERS, N_ITEMS, DIM, seed=seed, sparse=True)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 0.1)
    users = np.array([0, 0, 1, 1, 1, 2, 2])
    items = rng.integers(0, N_ITEMS, len(users))
    negatives = rng.integers(0, N_ITEMS, (len(users), K))
    return model, users, items, negatives


def _rows(model) -> Rows:
    return Rows(model.item_embedding.weight.detach().numpy().copy(), model.item_bias.weight.detach().numpy()[:, 0].copy())


def _one_user(model_seed: int, users: np.ndarray):
    """The common case, one client per user, which takes its own paths."""
    model = build_model("mf", 1, N_ITEMS, DIM, seed=model_seed, sparse=True)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 0.1)
    return model, np.zeros_like(users)


@pytest.mark.parametrize("one_user", [False, True], ids=["silo", "one-user"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.loss}-l2={s.l2}-l1={s.l1}")
def test_sgd_batches_match_autograd(monkeypatch, settings, one_user):
    model, users, items, negatives = _problem()
    if one_user:
        model, users = _one_user(0, users)
    order = torch.randperm(len(users), generator=seeded_generator(1)).numpy()  # the reference's batch order
    # two batches, the second reading the first's steps; the reference draws each batch's negatives in turn
    halves = [(order[:4], negatives[:4]), (order[4:], negatives[4:])]
    draws = iter(negatives for _, negatives in halves)
    monkeypatch.setattr(training, "_negatives", lambda n, n_items, generator, pool=None: torch.as_tensor(next(draws).ravel()))
    rows = _rows(model)
    user_vectors = model.user_embedding.weight.detach().numpy().copy()
    d_vectors, d_bias, loss = train_items(user_vectors, users, items, halves, rows, settings)
    reference = train(model, torch.as_tensor(users), torch.as_tensor(items), dataclasses.replace(settings, batch_size=4),
                      seeded_generator(1), params=model.shared_parameters())  # fmt: skip
    np.testing.assert_allclose(rows.vectors + d_vectors, model.item_embedding.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows.bias + d_bias, model.item_bias.weight.detach().numpy()[:, 0], rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("one_user", [False, True], ids=["silo", "one-user"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.loss}-l2={s.l2}-l1={s.l1}")
def test_adam_fold_in_matches_the_reference(monkeypatch, settings, one_user):
    model, users, items, negatives = _problem(1)
    if one_user:
        model, users = _one_user(1, users)
    steps = 3
    draws = [np.roll(negatives, s, axis=0) for s in range(steps)]
    calls = iter(draws)
    monkeypatch.setattr(training, "_negatives", lambda n, n_items, generator, pool=None: torch.as_tensor(next(calls).ravel()))
    rows = _rows(model)
    start = model.user_embedding.weight.detach().numpy().copy()
    folded = fold_in_users(start, users, items, draws, rows, settings, lr=0.1)
    fold_in(model, torch.as_tensor(users), torch.as_tensor(items), settings, steps, 0.1, seeded_generator(0))
    np.testing.assert_allclose(folded, model.user_embedding.weight.detach().numpy(), rtol=1e-4, atol=1e-6)


def _update(**overrides):
    rng = np.random.default_rng(5)
    shared = {ITEMS: rng.normal(0, 0.1, (40, DIM)).astype(np.float32), BIAS: np.zeros((40, 1), np.float32)}
    args = dict(global_shared=shared, private=None, local_users=np.zeros(6, np.int64),
                items=np.array([1, 3, 5, 7, 9, 11]), n_users=1, settings=SETTINGS[0], refit_steps=2,
                user_lr=0.1, seed=0, server_round=1, partition_id=4)  # fmt: skip
    return shared, local_update_mf(**{**args, **overrides})


def test_a_round_is_a_function_of_seed_round_and_partition():
    shared, (delta, private, loss) = _update()
    _, (again, private_again, loss_again) = _update()
    _, (other, _, _) = _update(server_round=2)
    for name in delta:
        np.testing.assert_array_equal(delta[name], again[name])
    np.testing.assert_array_equal(private[USERS], private_again[USERS])
    assert loss == loss_again
    assert not np.array_equal(delta[ITEMS], other[ITEMS])
    assert private[USERS].shape == (1, DIM) and delta[ITEMS].dtype == np.float32


def test_only_rows_the_round_read_change():
    shared, (delta, _, _) = _update()
    changed = np.flatnonzero(np.abs(delta[ITEMS]).sum(1))
    assert {1, 3, 5, 7, 9, 11} <= set(changed)  # every positive moved
    assert len(changed) < 40  # and the rest is the negatives drawn, not the table


def test_a_returning_client_starts_from_its_private_vectors():
    _, (_, first, _) = _update()
    _, (_, second, _) = _update(private=first, server_round=2)
    _, (_, fresh, _) = _update(server_round=2)
    assert not np.array_equal(second[USERS], fresh[USERS])
    np.testing.assert_array_equal(mf_update.init_users(1, DIM, 0, 4), mf_update.init_users(1, DIM, 0, 4))


def test_the_servers_fold_in_is_a_function_of_the_seed_and_scores_like_the_reference():
    """Central evaluation of MF folds in every user in numpy, in chunks of users;
    it ranks as the PyTorch fold-in does, up to the draw of negatives."""
    from prunus.common.config import Config
    from prunus.common.datasets import load_split
    from prunus.common.mf_closed_form import fold_in_all
    from prunus.common.training import client_settings
    from prunus.server.evaluation import CentralEvaluator

    cfg = Config.of(synthetic_users=300, synthetic_items=200, dim=8, seed=2)
    split = load_split(cfg)
    rng = np.random.default_rng(0)
    shared = {ITEMS: rng.normal(scale=0.3, size=(200, 8)).astype(np.float32),
              BIAS: rng.normal(scale=0.1, size=(200, 1)).astype(np.float32)}  # fmt: skip
    args = (shared[ITEMS], shared[BIAS], split.train_users, split.train_items, split.n_users, client_settings(cfg), 3,
            0.1, 2)  # fmt: skip
    np.testing.assert_array_equal(fold_in_all(*args), fold_in_all(*args))
    assert not np.array_equal(fold_in_all(*args, chunk=7), fold_in_all(*args[:-1], 3))
    closed = CentralEvaluator(cfg, split)(shared)
    reference = CentralEvaluator(cfg.replace(local_trainer="torch"), split)(shared)
    assert abs(closed["hr@10"] - reference["hr@10"]) <= 0.05
