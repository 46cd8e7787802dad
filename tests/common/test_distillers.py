"""The distillers of `common.distill` on a small synthetic teacher: shapes,
determinism by seed, the closed form's optimality, the pseudo-users' profiles,
and every bad input refused with a one-line reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunus.common.config import ConfigError, from_mapping
from prunus.common.distill import DISTILLERS, DistillError, DistillSettings, Teacher
from prunus.common.distill.base import distill
from prunus.common.distill.pseudo_users import profiles, pseudo_users
from prunus.common.distill.truncate import top_basis
from prunus.common.mf_closed_form import BIAS, ITEMS
from prunus.common.training import TrainSettings

N_ITEMS, DIM = 40, 8
FAST = DistillSettings(pseudo_users=48, profile_min=3, profile_max=12, distill_epochs=4, distill_batch=16)


def _teacher(seed: int = 0, n_items: int = N_ITEMS, dim: int = DIM) -> Teacher:
    rng = np.random.default_rng(seed)
    items = (rng.standard_normal((n_items, dim)) * np.linspace(1.0, 0.1, dim)).astype(np.float32)
    bias = (rng.standard_normal(n_items) * 0.3).astype(np.float32)
    fold_in = TrainSettings(loss="bce", num_negatives=4, l2=0.001, optimizer="sgd", reduction="sum")
    return Teacher(items, bias, fold_in, fold_in_epochs=5, user_lr=0.1)


@pytest.mark.parametrize("method", DISTILLERS.names())
@pytest.mark.parametrize("dim", [1, 3, DIM])
def test_a_student_has_the_teachers_items_at_its_own_width(method: str, dim: int):
    student = distill(method, _teacher(), dim, FAST)
    assert student.items.shape == (N_ITEMS, dim) and student.bias.shape == (N_ITEMS,)
    assert student.items.dtype == student.bias.dtype == np.float32
    params = student.params()
    assert set(params) == {ITEMS, BIAS} and params[BIAS].shape == (N_ITEMS, 1)
    assert np.isfinite(student.items).all()


@pytest.mark.parametrize("method", DISTILLERS.names())
def test_the_same_seed_gives_the_same_student(method: str):
    first, second = (distill(method, _teacher(), 3, FAST) for _ in range(2))
    np.testing.assert_array_equal(first.items, second.items)
    np.testing.assert_array_equal(first.bias, second.bias)
    assert first.losses == second.losses


@pytest.mark.parametrize("method", ["scores", "ranking"])
def test_another_seed_gives_another_student_and_training_lowers_the_loss(method: str):
    base = distill(method, _teacher(), 3, dataclasses.replace(FAST, distill_epochs=12))
    other = distill(method, _teacher(), 3, dataclasses.replace(FAST, distill_epochs=12, distill_seed=1))
    assert not np.array_equal(base.items, other.items)
    assert len(base.losses) == 12 and base.losses[-1] < base.losses[0]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), dim=st.integers(1, DIM))
def test_svd_keeps_the_best_rank_dim_table(seed: int, dim: int):
    """Eckart-Young: mapped back, the student is the teacher less its tail
    singular directions, an error of exactly the tail's energy; at the full
    width every user's scores are the teacher's."""
    teacher = _teacher(seed)
    student = distill("svd", teacher, dim, FAST)
    basis = top_basis(teacher.items, dim)
    singular = np.linalg.svd(teacher.items.astype(np.float64), compute_uv=False)
    error = np.sum((teacher.items - student.items.astype(np.float64) @ basis.T) ** 2)
    assert error == pytest.approx(np.sum(singular[dim:] ** 2), rel=1e-4, abs=1e-6)
    np.testing.assert_array_equal(student.bias, teacher.bias)
    full = distill("svd", teacher, DIM, FAST)
    np.testing.assert_allclose(full.items @ full.items.T, teacher.items @ teacher.items.T, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), low=st.integers(1, 10), span=st.integers(0, 20))
def test_profiles_are_distinct_items_of_a_length_within_bounds(seed: int, low: int, span: int):
    chosen = dataclasses.replace(FAST, distill_seed=seed, profile_min=low, profile_max=low + span)
    users_of, items = profiles(_teacher(), chosen)
    assert np.all(np.diff(users_of) >= 0) and items.min() >= 0 and items.max() < N_ITEMS
    lengths = np.bincount(users_of, minlength=chosen.pseudo_users)
    assert lengths.min() >= low and lengths.max() <= low + span
    for user in range(chosen.pseudo_users):
        mine = items[users_of == user]
        assert len(np.unique(mine)) == len(mine)


def test_profiles_follow_the_teachers_scores():
    """Items the teacher scores high for everyone (a large bias) are drawn more often."""
    teacher = _teacher()
    popular = dataclasses.replace(teacher, bias=np.where(np.arange(N_ITEMS) < 5, 4.0, -4.0).astype(np.float32))
    _, items = profiles(popular, FAST)
    assert np.mean(items < 5) > 0.3  # 5 of 40 items: 1/8 if drawn uniformly
    vectors = pseudo_users(popular, FAST)
    assert vectors.shape == (FAST.pseudo_users, DIM) and np.isfinite(vectors).all()


@pytest.mark.parametrize(("method", "dim", "chosen", "reason"), [
    ("ranking", 0, FAST, "--dim 0: a student's width must be in 1..8"),
    ("svd", DIM + 1, FAST, "--dim 9: a student's width must be in 1..8"),
    ("ranking", 2, dataclasses.replace(FAST, profile_max=N_ITEMS + 1), "profile-max: 41 exceeds the teacher's 40"),
    ("teacher", 2, FAST, "unknown distill-method 'teacher'; expected one of"),
    ("ranking", 2, dataclasses.replace(FAST, distill_lr=1e30), "ranking: the student diverged"),
])  # fmt: skip
def test_bad_requests_are_refused_with_the_reason(method: str, dim: int, chosen: DistillSettings, reason: str):
    with pytest.raises(DistillError, match="^" + reason.replace("(", r"\(")):
        distill(method, _teacher(), dim, chosen)


def test_only_a_finite_mf_teacher_is_taken():
    cfg = from_mapping({"dim": DIM})
    good = {ITEMS: np.ones((N_ITEMS, DIM), np.float32), BIAS: np.zeros((N_ITEMS, 1), np.float32)}
    assert Teacher.of_run(good, cfg).dim == DIM
    with pytest.raises(DistillError, match="^the teacher is 'neumf'; distillation takes an MF teacher"):
        Teacher.of_run(good, from_mapping({"model": "neumf"}))
    with pytest.raises(DistillError, match="hold NaN or an infinity"):
        Teacher.of_run(good | {ITEMS: np.full((N_ITEMS, DIM), np.nan, np.float32)}, cfg)
    with pytest.raises(DistillError, match="do not fit"):
        Teacher.of_run(good | {BIAS: np.zeros((N_ITEMS + 1, 1), np.float32)}, cfg)
    with pytest.raises(DistillError, match="an MF teacher holds"):
        Teacher.of_run({ITEMS: good[ITEMS]}, cfg)


def test_settings_from_overrides_leave_the_config_keys():
    chosen, rest = DistillSettings.split_overrides(["pseudo-users=100", "eval-split=validation", "temperature=0.5"])
    assert (chosen.pseudo_users, chosen.temperature, rest) == (100, 0.5, ["eval-split=validation"])
    assert chosen.to_dict()["pseudo-users"] == 100
    with pytest.raises(ConfigError, match="^pseudo-users: expected int, got 'many'$"):
        DistillSettings.split_overrides(["pseudo-users=many"])
    with pytest.raises(ConfigError, match="^pseudo-users: must be > 0"):
        DistillSettings.split_overrides(["pseudo-users=0"])
    with pytest.raises(ConfigError, match="^profile-min: must not exceed profile-max"):
        DistillSettings(profile_min=30, profile_max=20)
