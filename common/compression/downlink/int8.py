"""`int8`: the global model's non-zeros as int8 with one float32 scale per tensor.

A quarter of the bytes; measured free of quality on ML-100K
(docs/results/ml100k-downlink.md).
"""

from __future__ import annotations

from prunus.common.compression import DOWNLINK
from prunus.common.compression.broadcast import CodecBroadcast


@DOWNLINK.register("int8")
class Int8Broadcast(CodecBroadcast):
    name = "int8"
    value_codec = "int8"
