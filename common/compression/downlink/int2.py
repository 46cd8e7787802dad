"""`int2`: the global model as per-row scaled 2-bit codes (-1, 0, +1 steps), a sixteenth of fp32's bytes.

One float16 scale per row (per item for the item tables), stochastic
rounding seeded by (seed, round): unbiased, so what clients decode averages
to the model. Format and error bound: `common.codec_rows`.
"""

from __future__ import annotations

from prunus.common.compression import DOWNLINK
from prunus.common.compression.broadcast import RowBlockBroadcast


@DOWNLINK.register("int2")
class Int2Broadcast(RowBlockBroadcast):
    name = "int2"
    bits = 2
