"""Users made from the teacher alone, for distillation without client data.

A pseudo-user is made the way the teacher's world would make one: a taste
(a random direction of user space), a profile of items drawn without
replacement from the teacher's own scores for that taste (popularity enters
through the item biases), and then the teacher's fold-in of that profile, the
very procedure central evaluation applies to a real user. The vectors so
made lie where the teacher's folded-in users lie, not in every direction of
user space alike: what a student must reproduce is the teacher's scores for
such users.
"""

from __future__ import annotations

import numpy as np

from prunus.common.distill.base import DistillSettings, Teacher
from prunus.common.mf_closed_form import fold_in_all

STREAM = 0xD157  # keeps the pseudo-users' random stream apart from others of the same seed
CHUNK = 256  # tastes whose scores over every item are drawn at once


def pseudo_users(teacher: Teacher, settings: DistillSettings) -> np.ndarray:
    """`pseudo-users` user vectors of the teacher's width, from `distill-seed` alone."""
    users_of, items = profiles(teacher, settings)
    return fold_in_all(teacher.items, teacher.bias[:, None], users_of, items, settings.pseudo_users,
                       teacher.fold_in, teacher.fold_in_epochs, teacher.user_lr, settings.distill_seed)


def profiles(teacher: Teacher, settings: DistillSettings) -> tuple[np.ndarray, np.ndarray]:
    """Each pseudo-user's items, `(users_of, items)` sorted by user: a profile
    length drawn log-uniformly in [profile-min, profile-max], its items drawn
    without replacement with probability proportional to exp(teacher score)
    (Gumbel top-k)."""
    rng = np.random.default_rng([settings.distill_seed, STREAM])
    n = settings.pseudo_users
    rms = float(np.sqrt(np.mean(np.sum(teacher.items.astype(np.float64) ** 2, axis=1))))
    tastes = rng.standard_normal((n, teacher.dim)) * (settings.taste_scale / max(rms, 1e-12))
    low, high = np.log(settings.profile_min), np.log(settings.profile_max + 1)
    lengths = np.minimum(np.exp(rng.uniform(low, high, n)).astype(np.int64), settings.profile_max)
    users_of, items = [], []
    for start in range(0, n, CHUNK):
        scores = tastes[start:start + CHUNK] @ teacher.items.T + teacher.bias
        keys = scores + rng.gumbel(size=scores.shape)
        top = np.argsort(-keys, axis=1, kind="stable")
        for row, order in enumerate(top):
            user = start + row
            users_of.append(np.full(lengths[user], user, dtype=np.int64))
            items.append(np.sort(order[: lengths[user]]))
    return np.concatenate(users_of), np.concatenate(items)
