"""Knowledge distillation as plug-ins: a compact MF student from a federated MF teacher.

`DISTILLERS` lists the methods (`distill-method`), one module each, every
module of this package imported here so a method that registers itself in a
new module is a valid choice with no other edit. A method sees the teacher's
item side only (`Teacher`: its item table and biases, and how its run folds
users in); no client data reaches it. `simulations/distill.py` runs it on a
run folder and saves the student as a run folder of its own.
"""

from __future__ import annotations

import importlib
import pkgutil

from prunus.common.distill.base import DISTILLERS, Distiller, DistillError, DistillSettings, Student, Teacher

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DISTILLERS", "DistillError", "DistillSettings", "Distiller", "Student", "Teacher"]
