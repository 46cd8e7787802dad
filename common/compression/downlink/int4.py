"""`int4`: the global model as per-row scaled 4-bit codes (15 levels), an eighth of fp32's bytes.

One float16 scale per row (per item for the item tables), stochastic
rounding seeded by (seed, round): unbiased, so what clients decode averages
to the model. Format and error bound: `common.codec_rows`.
"""

from __future__ import annotations

from prunus.common.compression import DOWNLINK
from prunus.common.compression.broadcast import RowBlockBroadcast


@DOWNLINK.register("int4")
class Int4Broadcast(RowBlockBroadcast):
    name = "int4"
    bits = 4
