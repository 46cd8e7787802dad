"""What every distiller shares: the teacher's item side, the settings, the student, the registry.

A distiller is a function `(teacher, dim, settings) -> Student`. It is given
the `Teacher` alone: the item table and biases the server holds, and how the
teacher's run folds a user in (the same fold-in that later scores the
student). It never sees a client's interactions: whatever users it needs, it
makes from the teacher itself (`common.distill.pseudo_users`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunus.common.config import Config, ConfigError, key_of, non_negative, positive, section
from prunus.common.mf_closed_form import BIAS, ITEMS
from prunus.common.params import Params
from prunus.common.registry import Registry
from prunus.common.training import TrainSettings, client_settings


class DistillError(ValueError):
    """A teacher, a width or a setting that cannot be distilled; the message says why."""


@section
class DistillSettings:
    """How a student is distilled (`--set key=value` on `prunus distill`)."""

    # users made from the teacher: a random taste, a profile the teacher's own
    # scores draw for it, and the teacher's fold-in of that profile
    pseudo_users: int = field(default=4096, metadata=positive())
    profile_min: int = field(default=20, metadata=positive())
    profile_max: int = field(default=200, metadata=positive())
    # a taste's spread, in units of 1 / the root mean square item norm (1: its
    # scores spread about as much as one item's unit step)
    taste_scale: float = field(default=1.0, metadata=positive())
    distill_epochs: int = field(default=60, metadata=positive())
    distill_lr: float = field(default=0.01, metadata=positive())
    distill_batch: int = field(default=256, metadata=positive())
    # the softmax temperature of ranking distillation (scores / temperature)
    temperature: float = field(default=1.0, metadata=positive())
    distill_seed: int = field(default=0, metadata=non_negative())

    def __post_init__(self) -> None:
        if self.profile_min > self.profile_max:
            raise ConfigError(f"profile-min: must not exceed profile-max ({self.profile_min} > {self.profile_max})")

    def to_dict(self) -> dict[str, Any]:
        """Dashed keys, as `--set` takes them."""
        return {key_of(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def split_overrides(cls, overrides: list[str]) -> tuple[DistillSettings, list[str]]:
        """The settings `key=value` overrides name, and the overrides left (the
        students' run config's keys)."""
        types = {key_of(f.name): type(f.default) for f in dataclasses.fields(cls)}
        mine: dict[str, Any] = {}
        rest = []
        for item in overrides:
            key, eq, text = item.partition("=")
            key = key.strip()
            if key not in types:
                rest.append(item)
                continue
            if not eq:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
            try:
                mine[key.replace("-", "_")] = types[key](text.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected {types[key].__name__}, got {text.strip()!r}") from None
        return cls(**mine), rest


@dataclass(frozen=True)
class Teacher:
    """The teacher's item side as the server holds it, and its run's fold-in."""

    items: np.ndarray  # (n_items, d) float32
    bias: np.ndarray  # (n_items,) float32
    fold_in: TrainSettings  # the loss, negatives and penalty a user is folded in with
    fold_in_epochs: int
    user_lr: float

    @property
    def dim(self) -> int:
        return int(self.items.shape[1])

    @property
    def n_items(self) -> int:
        return int(self.items.shape[0])

    @classmethod
    def of_run(cls, params: Params, cfg: Config) -> Teacher:
        """The teacher of a run's saved model; DistillError unless it is a finite MF model."""
        if cfg.model.model != "mf":
            raise DistillError(f"the teacher is {cfg.model.model!r}; distillation takes an MF teacher")
        if set(params) != {ITEMS, BIAS}:
            raise DistillError(f"an MF teacher holds {ITEMS} and {BIAS}; got {', '.join(sorted(params))}")
        items, bias = params[ITEMS], params[BIAS]
        if items.ndim != 2 or bias.shape != (len(items), 1) or not len(items):
            raise DistillError(f"the teacher's tables do not fit: {ITEMS} {items.shape}, {BIAS} {bias.shape}")
        if not (np.isfinite(items).all() and np.isfinite(bias).all()):
            raise DistillError("the teacher's tables hold NaN or an infinity")
        return cls(items.astype(np.float32), bias[:, 0].astype(np.float32), client_settings(cfg),
                   cfg.evaluation.fold_in_epochs, cfg.training.user_lr)


@dataclass(frozen=True)
class Student:
    """A distilled MF item side, and the distillation loss after each epoch (none for a closed form)."""

    items: np.ndarray  # (n_items, dim) float32
    bias: np.ndarray  # (n_items,) float32
    losses: tuple[float, ...] = ()

    def params(self) -> Params:
        """The student as a run's saved MF model holds it."""
        return {ITEMS: self.items, BIAS: self.bias[:, None]}


Distiller = Callable[[Teacher, int, DistillSettings], Student]
DISTILLERS: Registry[Distiller] = Registry("distill-method")


def check_width(teacher: Teacher, dim: int, settings: DistillSettings) -> None:
    """DistillError unless a student of width `dim` can be distilled from `teacher` with `settings`."""
    if not 1 <= dim <= teacher.dim:
        raise DistillError(f"--dim {dim}: a student's width must be in 1..{teacher.dim} (the teacher's)")
    if settings.profile_max > teacher.n_items:
        raise DistillError(f"profile-max: {settings.profile_max} exceeds the teacher's {teacher.n_items} items")


def distill(method: str, teacher: Teacher, dim: int, settings: DistillSettings) -> Student:
    """Run distiller `method`; DistillError for a bad width or setting, or a student that is not finite."""
    try:
        distiller = DISTILLERS.get(method)
    except ValueError as err:
        raise DistillError(str(err)) from None
    check_width(teacher, dim, settings)
    student = distiller(teacher, dim, settings)
    if not (np.isfinite(student.items).all() and np.isfinite(student.bias).all()):
        raise DistillError(f"{method}: the student diverged (NaN or infinity); lower distill-lr")
    return student
