"""`fp16`: the global model's non-zeros as float16 (half the bytes; relative error <= 2^-11)."""

from __future__ import annotations

from prunus.common.compression import DOWNLINK
from prunus.common.compression.broadcast import CodecBroadcast


@DOWNLINK.register("fp16")
class Fp16Broadcast(CodecBroadcast):
    name = "fp16"
    value_codec = "fp16"
