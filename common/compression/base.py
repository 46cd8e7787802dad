"""The two protocols every compression method implements, and what they exchange.

An uplink method has a client half (`encode`: the update and the client's
compression state -> the reply's payload, the new state, stats) and a server
half (`decode`: the payload -> a checked `Update`, or `PayloadError`). A
downlink method has a server half (`encode` the global model) and a client half
(`decode` the broadcast). Both halves live in one class, so they cannot drift.
Methods read only their own config section (`CompressionConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from flwr.app import ArrayRecord

from prunus.common.update import Update

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig

Params = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]


class PayloadError(ValueError):
    """A payload that does not decode into an update of the model; says why.

    The one error a server half raises: the server rejects the reply with
    this message and the round goes on.
    """


@dataclass(frozen=True)
class RoundContext:
    """What a client's encoder may depend on besides the update itself."""

    server_round: int
    partition_id: int
    seed: int
    # the round's local learning rate: error feedback keeps its residual per
    # unit of it (a returning client's leftover must not land at an old rate)
    lr: float = 1.0


@dataclass(frozen=True)
class Encoded:
    """The client half's result."""

    record: ArrayRecord  # the reply's payload
    state: dict[str, np.ndarray] = field(default_factory=dict)  # kept in the client's state (never sent)
    nnz: int = 0  # numbers sent
    density: float = 1.0  # the round's target density


class UplinkMethod(Protocol):
    """Client update -> payload (client half); payload -> `Update` (server half)."""

    name: ClassVar[str]

    def __init__(self, settings: CompressionConfig) -> None: ...

    def encode(self, update: Params, state: dict[str, np.ndarray] | None, ctx: RoundContext) -> Encoded: ...

    def decode(self, record: ArrayRecord, shapes: Shapes) -> Update: ...


class DownlinkMethod(Protocol):
    """Global model -> broadcast payload (server half); payload -> arrays (client half)."""

    name: ClassVar[str]

    def __init__(self, settings: CompressionConfig) -> None: ...

    def encode(self, params: Params) -> ArrayRecord: ...

    def decode(self, record: ArrayRecord, shapes: Shapes) -> Params: ...
