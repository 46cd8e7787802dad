"""The downlink: global shared parameters as sent to clients.

fp32 sends the arrays as they are; fp16 / int8 send every entry through
`common.codec` (a lossy, smaller broadcast). Clients train from what they
decode, and their update is relative to it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from common.codec import pack_update, unpack_update
from common.params import Params, from_record, to_record
from common.pruning import densify


def encode_broadcast(params: Params, codec: str) -> ArrayRecord:
    if codec == "fp32":
        return to_record(params)
    full = {name: (np.arange(value.size, dtype=np.int64), value.ravel(), value.shape) for name, value in params.items()}
    return pack_update(full, index_codec="auto", value_codec=codec)


def decode_broadcast(record: ArrayRecord, codec: str) -> Params:
    if codec == "fp32":
        return from_record(record)
    return densify(unpack_update(record))
