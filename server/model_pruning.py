"""Gradual magnitude pruning of the global model (Zhu & Gupta 2017).

After each round's update the server zeroes the smallest-magnitude entries of
the prunable tensors (embedding tables and weight matrices, not biases) so
their sparsity follows a cubic ramp from 0 at `model-prune-start` to
`model-sparsity` at `model-prune-end`. Clients receive the zeros, so the mask
is known to them without extra bytes, and they keep it in their updates; the
broadcast and the saved model then travel in sparse form.
"""

from __future__ import annotations

from prunus.common.config import Config
from prunus.common.models import is_prunable
from prunus.common.params import Params
from prunus.common.pruning import PruneSpec, select

TOPK = PruneSpec(method="topk")


def sparsity_at(cfg: Config, server_round: int) -> float:
    """Target sparsity of the prunable tensors after `server_round`."""
    if cfg.model_sparsity == 0 or server_round < cfg.model_prune_start:
        return 0.0
    span = max(cfg.model_prune_end - cfg.model_prune_start, 1)
    progress = min((server_round - cfg.model_prune_start) / span, 1.0)
    return cfg.model_sparsity * (1 - (1 - progress) ** 3)


def prune_model(params: Params, sparsity: float) -> Params:
    """Keep the (1 - sparsity) largest-magnitude entries of each prunable tensor."""
    if sparsity <= 0:
        return params
    prunable = {name: value for name, value in params.items() if is_prunable(name)}
    masks = select(prunable, TOPK, 1.0 - sparsity)
    return {name: value * masks[name] if name in masks else value for name, value in params.items()}
