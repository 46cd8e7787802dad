"""The downlink: global shared parameters as sent to clients.

Dense (`Config.dense_downlink`): the float32 arrays as they are. Otherwise the
non-zero entries go through `common.codec` with the downlink value codec: a
pruned model travels as its non-zeros, and fp16 / int8 give a lossy, smaller
broadcast. Clients train from what they decode; their update is relative to it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from prunus.common.codec import pack_update, unpack_update
from prunus.common.config import Config
from prunus.common.params import Params, from_record, to_record
from prunus.common.pruning import densify


def encode_broadcast(params: Params, cfg: Config) -> ArrayRecord:
    if cfg.dense_downlink:
        return to_record(params)
    nonzeros = {}
    for name, value in params.items():
        flat = value.ravel()
        indices = np.flatnonzero(flat)
        nonzeros[name] = (indices, flat[indices], value.shape)
    return pack_update(nonzeros, index_codec="auto", value_codec=cfg.downlink_codec)


def decode_broadcast(record: ArrayRecord, cfg: Config) -> Params:
    return from_record(record) if cfg.dense_downlink else densify(unpack_update(record))
