"""`randomk`: per tensor, `ceil(d * numel)` positions drawn uniformly among the non-zeros.

A baseline: it shows what magnitude selection is worth. Values are not
rescaled; error feedback keeps the rest. Draws from the client's seeded
generator, so a run is repeatable.

Under secure aggregation every client of a round keeps the same positions
(`SharedRandomK`), drawn from (seed, round, tensor) alone, whatever its
update holds: the round's sum then adds like coordinates, and the positions
say nothing of any client. Error feedback carries the other positions to
the client's next round.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.base import Params
from prunus.common.compression.sparse import SparseUplink
from prunus.common.pruning import PruneSpec, density_at, keep_count


class SharedRandomK:
    """`ceil(density * numel)` positions per tensor, the same for every client of a round."""

    def __init__(self, density: float, seed: int, server_round: int) -> None:
        self.density, self.seed, self.server_round = density, seed, server_round
        self._positions: dict[tuple[str, int], np.ndarray] = {}

    def positions(self, name: str, size: int) -> np.ndarray:
        """Sorted flat positions, from (seed, round, tensor name) alone."""
        key = (name, size)
        if key not in self._positions:
            rng = np.random.default_rng([self.seed, self.server_round, zlib.crc32(name.encode()), 17])
            self._positions[key] = np.sort(rng.choice(size, size=keep_count(self.density, size), replace=False))
        return self._positions[key]

    def width(self, name: str, shape: tuple[int, ...]) -> int:
        return keep_count(self.density, math.prod(shape))

    def project(self, name: str, value: np.ndarray) -> np.ndarray:
        return value.reshape(-1)[self.positions(name, value.size)]

    def lift(self, name: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        full = np.zeros(math.prod(shape), dtype=values.dtype)
        full[self.positions(name, full.size)] = values
        return full.reshape(shape)


@UPLINK.register("randomk")
class RandomK(SparseUplink):
    name = "randomk"
    draws = True

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        if rng is None:
            raise ValueError("method 'randomk' needs a numpy Generator (rng)")
        masks = {}
        for name, x in arrays.items():
            candidates = np.flatnonzero(x != 0)
            k = min(keep_count(density, x.size), candidates.size)
            mask = np.zeros(x.size, dtype=bool)
            mask[rng.choice(candidates, size=k, replace=False)] = True
            masks[name] = mask.reshape(x.shape)
        return masks

    def coordinates(self, seed: int, server_round: int, basis: Params | None = None) -> SharedRandomK:
        return SharedRandomK(density_at(server_round, self.settings.density, self.settings.density_warmup_rounds),
                             seed, server_round)
