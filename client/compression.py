"""What a client sends: prune its update (with error feedback), then encode it.

The residual (what was not sent: pruned entries and quantisation error) stays
in the client's state, stored compactly because a recommender's update is
row-sparse, and is added to the next round's update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord

from prunus.common.codec import pack_update
from prunus.common.config import Config
from prunus.common.params import Params, to_record
from prunus.common.pruning import PruneSpec, SparseUpdate, compact, density_at, expand, prune_update

RESIDUAL_INDEX, RESIDUAL_VALUES = ".idx", ".val"


@dataclass(frozen=True)
class Encoded:
    record: ArrayRecord  # what goes into the reply
    residual: SparseUpdate  # the new residual, compact
    nnz: int  # entries sent
    density: float  # the round's target density


def prune_spec(cfg: Config) -> PruneSpec:
    return PruneSpec(
        method=cfg.prune_method,
        density=cfg.density,
        threshold=cfg.prune_threshold,
        error_feedback=cfg.error_feedback,
        value_codec=cfg.value_codec,
    )


def encode_update(
    cfg: Config, delta: Params, residual: SparseUpdate | None, server_round: int, partition_id: int
) -> Encoded:
    """Dense float32 arrays for the baseline; otherwise prune + codec."""
    if cfg.dense_uplink:
        nnz = int(sum(np.count_nonzero(v) for v in delta.values()))
        return Encoded(to_record(delta), {}, nnz, 1.0)
    density = density_at(server_round, cfg.density, cfg.density_warmup_rounds)
    rng = np.random.default_rng([cfg.seed, server_round, partition_id, 2])
    # The residual is kept per unit of local learning rate: a user returns
    # every few dozen rounds, and an update left over from a round with a
    # larger rate would otherwise land at that rate on a model trained since
    # at a smaller one.
    lr = cfg.local_lr_at(server_round)
    carried = {name: value * lr for name, value in expand(residual).items()} if residual else None
    result = prune_update(delta, carried, prune_spec(cfg), density, rng)
    record = pack_update(result.sparse, index_codec=cfg.index_codec, value_codec=cfg.value_codec)
    kept = compact({name: value / lr for name, value in result.residual.items()})
    return Encoded(record, kept, result.nnz, density)


def residual_to_record(residual: SparseUpdate) -> ArrayRecord:
    """The compact residual as arrays for `context.state`."""
    arrays: Params = {}
    for name, (indices, values, shape) in residual.items():
        arrays[name + RESIDUAL_INDEX] = indices.astype(np.int64)
        arrays[name + RESIDUAL_VALUES] = values.astype(np.float32)
        arrays[name + ".shape"] = np.asarray(shape, dtype=np.int64)
    return to_record(arrays)


def residual_from_record(record: ArrayRecord) -> SparseUpdate:
    arrays = {name: array.numpy() for name, array in record.items()}
    names = {key[: -len(RESIDUAL_INDEX)] for key in arrays if key.endswith(RESIDUAL_INDEX)}
    return {
        name: (arrays[name + RESIDUAL_INDEX], arrays[name + RESIDUAL_VALUES], tuple(int(d) for d in arrays[name + ".shape"]))
        for name in names
    }
