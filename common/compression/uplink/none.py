"""`none`: no pruning, the FedAvg baseline.

With `value-codec = "fp32"` the update travels as plain float32 arrays, the
way Flower ships any model; the server checks names, shapes, dtype and
finiteness and takes it as a `Dense` update. With a lossy value codec every
non-zero entry goes through the codec (a dense update of a row-sparse table
still drops its all-zero rows), with error feedback on the quantisation error.
Under secure aggregation every client sends every entry (`EveryCoordinate`).
"""

from __future__ import annotations

import math

import numpy as np

from prunus.common.compression import UPLINK
from prunus.common.compression.base import Encoded, Params, PayloadError, RoundContext, Shapes
from prunus.common.compression.sparse import SparseUplink, check_names
from prunus.common.params import from_record, to_record
from prunus.common.payload import Arrays
from prunus.common.pruning import PruneSpec
from prunus.common.update import Dense, Update


class EveryCoordinate:
    """Secure aggregation's dense form: each tensor whole, flattened."""

    def width(self, name: str, shape: tuple[int, ...]) -> int:
        return math.prod(shape)

    def project(self, name: str, value: np.ndarray) -> np.ndarray:
        return value.reshape(-1)

    def lift(self, name: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return values.reshape(shape)


@UPLINK.register("none")
class NoPruning(SparseUplink):
    name = "none"

    @staticmethod
    def select(arrays, spec: PruneSpec, density: float, rng: np.random.Generator | None):
        return {name: x != 0 for name, x in arrays.items()}

    def coordinates(self, seed: int, server_round: int, basis: Params | None = None) -> EveryCoordinate:
        return EveryCoordinate()

    @property
    def dense(self) -> bool:
        return self.settings.value_codec == "fp32"

    def encode(self, update: Params, state: Params | None, ctx: RoundContext) -> Encoded:
        if not self.dense:
            return super().encode(update, state, ctx)
        nnz = int(sum(np.count_nonzero(v) for v in update.values()))
        return Encoded(to_record(update), {}, nnz, 1.0)

    def decode(self, record: Arrays, shapes: Shapes, ctx: RoundContext | None = None) -> Update:
        if not self.dense:
            return super().decode(record, shapes, ctx)
        check_names(record, shapes)
        try:
            arrays = from_record(record)
        except Exception as err:  # noqa: BLE001 - any decoding failure is a bad payload
            raise PayloadError(f"reply arrays cannot be decoded: {err}") from None
        update: Update = {}
        for name, value in arrays.items():
            if value.shape != shapes[name] or value.dtype != np.float32:
                raise PayloadError(f"array {name!r}: expected float32 {shapes[name]}, got {value.dtype} {value.shape}")
            if not np.isfinite(value).all():
                raise PayloadError(f"array {name!r} has non-finite values")
            update[name] = Dense(value)
        return update
