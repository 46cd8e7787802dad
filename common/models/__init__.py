"""Recommender models, one module each; each declares its tables (role, prunable).

Every module of this package is imported here, so a model that registers
itself with `@MODELS.register("name")` in a new module is a valid `model`
choice with no other edit (see docs/architecture.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from prunus.common.models.base import MODELS, ModelSpec, Recommender, Role, Table, build_model, model_spec, private_rows

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "ModelSpec", "Recommender", "Role", "Table", "build_model", "model_spec", "private_rows"]
