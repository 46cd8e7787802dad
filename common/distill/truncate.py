"""`svd`: the teacher's item table cut to its top singular directions, in closed form.

The best rank-`dim` approximation of the item table (least squares), expressed
in `dim` coordinates: `items @ basis`, where `basis` holds the top `dim` right
singular vectors. Scores of a user `u` of the teacher are kept as well as
any `dim`-wide table can keep them when every direction of user space counts
alike (`u @ basis` is the student's user). It needs no users at all; the
trained distillers start from it.
"""

from __future__ import annotations

import numpy as np

from prunus.common.distill.base import DISTILLERS, DistillSettings, Student, Teacher


def top_basis(items: np.ndarray, dim: int) -> np.ndarray:
    """The top `dim` right singular vectors of `items`, as columns (d, dim), each
    signed so that its largest entry is positive (one answer per table)."""
    _, _, vt = np.linalg.svd(items.astype(np.float64), full_matrices=False)
    basis = vt[:dim].T
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(dim)])
    return basis * np.where(signs == 0, 1.0, signs)


@DISTILLERS.register("svd")
def truncate(teacher: Teacher, dim: int, settings: DistillSettings) -> Student:
    """The teacher's items on their top `dim` singular directions; biases kept."""
    items = (teacher.items.astype(np.float64) @ top_basis(teacher.items, dim)).astype(np.float32)
    return Student(items, teacher.bias.copy())
