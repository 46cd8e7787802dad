"""`int8`: the global model as per-row scaled 8-bit codes (255 levels), a quarter of fp32's bytes.

One float16 scale per row (per item for the item tables), each value rounded
to the nearest step: at most half a step off, a step being its row's
max |value| / 127 (one large entry costs only its own row's precision, where
a scale per tensor zeroed every small row). A pruned model's non-zero codes
travel with their positions (`common.codec`), the row scales beside them.
Format and error bound: `common.codec_rows`.
"""

from __future__ import annotations

from prunus.common.compression import DOWNLINK
from prunus.common.compression.broadcast import RowBlockBroadcast


@DOWNLINK.register("int8")
class Int8Broadcast(RowBlockBroadcast):
    name = "int8"
    bits = 8
    stochastic = False
    sparse_when_pruned = True
