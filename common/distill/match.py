"""`scores` and `ranking`: a student trained to give pseudo-users the teacher's scores.

Both start from `svd` (the student's items `items @ basis`, each pseudo-user
`u @ basis`) and train the student's item table, item biases and one vector
per pseudo-user with Adam, in batches of pseudo-users, against the teacher's
scores of every item for those users:

* `scores`: the squared error of the scores (score matching); every item of
  every user counts alike, the tail of the ranking as much as its head;
* `ranking`: the Kullback-Leibler divergence from the teacher's softmax over
  all items to the student's (listwise ranking distillation, at
  `temperature`); an item counts in proportion to the probability the
  teacher gives it, so the head of each ranking, where HR@k is decided,
  weighs most, and a shift of all of a user's scores costs nothing.

The pseudo-user vectors are a means of training only: the saved student is
the item side, and evaluation folds its users in from their own items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from prunus.common.distill.base import DISTILLERS, DistillSettings, Student, Teacher
from prunus.common.distill.pseudo_users import pseudo_users
from prunus.common.distill.truncate import top_basis

Loss = Callable[[torch.Tensor, torch.Tensor, DistillSettings], torch.Tensor]


def _squared_error(student: torch.Tensor, teacher: torch.Tensor, settings: DistillSettings) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def _listwise(student: torch.Tensor, teacher: torch.Tensor, settings: DistillSettings) -> torch.Tensor:
    t = settings.temperature  # times t^2: the gradient's scale does not move with the temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                    reduction="batchmean") * t * t


def train_student(teacher: Teacher, dim: int, settings: DistillSettings, loss: Loss) -> Student:
    """The student fitted to the teacher's scores of `pseudo_users`, from `svd`'s start."""
    users = pseudo_users(teacher, settings)
    basis = top_basis(teacher.items, dim)
    t_items, t_bias = torch.as_tensor(teacher.items), torch.as_tensor(teacher.bias)
    items = torch.nn.Parameter(torch.as_tensor((teacher.items @ basis).astype(np.float32)))
    bias = torch.nn.Parameter(t_bias.clone())
    vectors = torch.nn.Parameter(torch.as_tensor((users @ basis).astype(np.float32)))
    t_users = torch.as_tensor(users)
    optimizer = torch.optim.Adam([items, bias, vectors], lr=settings.distill_lr)
    generator = torch.Generator().manual_seed(settings.distill_seed)
    losses = []
    for _ in range(settings.distill_epochs):
        order = torch.randperm(len(users), generator=generator)
        total = 0.0
        for start in range(0, len(users), settings.distill_batch):
            batch = order[start:start + settings.distill_batch]
            with torch.no_grad():
                target = t_users[batch] @ t_items.T + t_bias
            value = loss(vectors[batch] @ items.T + bias, target, settings)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            total += value.item() * len(batch)
        losses.append(total / len(users))
    return Student(items.detach().numpy().copy(), bias.detach().numpy().copy(), tuple(losses))


@DISTILLERS.register("scores")
def match_scores(teacher: Teacher, dim: int, settings: DistillSettings) -> Student:
    """Score matching: the squared error of every item's score."""
    return train_student(teacher, dim, settings, _squared_error)


@DISTILLERS.register("ranking")
def match_ranking(teacher: Teacher, dim: int, settings: DistillSettings) -> Student:
    """Ranking distillation: the teacher's softmax over items, matched."""
    return train_student(teacher, dim, settings, _listwise)
