"""The shared halves of the downlink methods: the global model through the codec.

The server sends each tensor's non-zero entries through `common.codec` with
the method's value codec (a pruned model travels as its non-zeros; fp16 and
int8 are lossy and smaller); a client decodes them and trains from what it
decoded, so its update is relative to the model it really has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from flwr.app import ArrayRecord

from prunus.common.codec import CodecError, pack_update, unpack_update
from prunus.common.compression.base import Params, PayloadError, Shapes
from prunus.common.update import densify, nonzeros

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig


class CodecBroadcast:
    """Base of the downlink methods: non-zeros with the value codec `value_codec`."""

    name: ClassVar[str]
    value_codec: ClassVar[str]

    def __init__(self, settings: CompressionConfig) -> None:
        self.settings = settings

    def encode(self, params: Params) -> ArrayRecord:
        return pack_update({name: nonzeros(value) for name, value in params.items()},
                           index_codec="auto", value_codec=self.value_codec)

    def decode(self, record: ArrayRecord, shapes: Shapes) -> Params:
        try:
            params = densify(unpack_update(record))
        except CodecError as err:
            raise PayloadError(f"undecodable broadcast: {err}") from None
        return check_model(params, shapes)


def check_model(params: Params, shapes: Shapes) -> Params:
    """The broadcast's tensors are the model's: same names, shapes, float32."""
    if set(params) != set(shapes):
        raise PayloadError(f"broadcast does not match the model: tensors {sorted(set(params) ^ set(shapes))}")
    for name, value in params.items():
        if tuple(value.shape) != tuple(shapes[name]) or value.dtype != np.float32:
            raise PayloadError(f"broadcast tensor {name!r}: expected float32 {shapes[name]}, got {value.dtype} {value.shape}")
    return params
