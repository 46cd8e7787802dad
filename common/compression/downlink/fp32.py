"""`fp32`: the global model as it is (the FedAvg baseline).

Plain float32 arrays, unless the server prunes the model (`model-sparsity`):
then its non-zeros travel through the codec, exactly.
"""

from __future__ import annotations

from prunus.common.compression import DOWNLINK
from prunus.common.compression.base import BroadcastContext, Params, PayloadError, Shapes, take_rows
from prunus.common.compression.broadcast import CodecBroadcast, check_model, clip_model
from prunus.common.params import from_record, to_record
from prunus.common.payload import Arrays


@DOWNLINK.register("fp32")
class Fp32Broadcast(CodecBroadcast):
    name = "fp32"
    value_codec = "fp32"

    @property
    def dense(self) -> bool:
        return self.settings.model_sparsity == 0

    def encode(self, params: Params, ctx: BroadcastContext) -> Arrays:
        return to_record(take_rows(clip_model(params, self.limit), ctx.rows)) if self.dense else super().encode(params, ctx)

    def decode(self, record: Arrays, shapes: Shapes) -> Params:
        if not self.dense:
            return super().decode(record, shapes)
        if set(record) != set(shapes):  # before anything is read: extra arrays would cost their copies
            raise PayloadError(f"broadcast does not match the model: tensors {sorted(set(record) ^ set(shapes))[:10]}")
        try:
            params = from_record(record)
        except Exception as err:  # noqa: BLE001 - any unreadable array is a bad broadcast
            raise PayloadError(f"undecodable broadcast: {err}") from None
        return check_model(params, shapes)
