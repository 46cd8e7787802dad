"""Gradual magnitude pruning of the global model (Zhu & Gupta 2017).

After each round's update the server zeroes the smallest-magnitude entries of
the tensors the model declares prunable (tables and weight matrices, not
biases) so their sparsity follows a cubic ramp from 0 at `model-prune-start` to
`model-sparsity` at `model-prune-end`. Clients receive the zeros, so the mask
is known to them without extra bytes, and they keep it in their updates
(`client.local_update`); the broadcast and the saved model then travel in
sparse form.
"""

from __future__ import annotations

from prunus.common.config import CompressionConfig
from prunus.common.params import Params
from prunus.common.pruning import PruneSpec, select

TOPK = PruneSpec(method="topk")


def sparsity_at(settings: CompressionConfig, server_round: int) -> float:
    """Target sparsity of the prunable tensors after `server_round`."""
    if settings.model_sparsity == 0 or server_round < settings.model_prune_start:
        return 0.0
    span = max(settings.model_prune_end - settings.model_prune_start, 1)
    progress = min((server_round - settings.model_prune_start) / span, 1.0)
    return settings.model_sparsity * (1 - (1 - progress) ** 3)


class ModelPruner:
    """Prunes the global model after each round by the schedule of `settings`."""

    def __init__(self, settings: CompressionConfig, prunable: list[str]) -> None:
        self.settings, self.prunable = settings, set(prunable)

    def prune(self, params: Params, server_round: int) -> Params:
        """Keep the (1 - sparsity) largest-magnitude entries of each prunable tensor."""
        sparsity = sparsity_at(self.settings, server_round)
        if sparsity <= 0:
            return params
        masks = select({name: value for name, value in params.items() if name in self.prunable}, TOPK, 1.0 - sparsity)
        return {name: value * masks[name] if name in masks else value for name, value in params.items()}
