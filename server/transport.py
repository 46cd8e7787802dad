"""How the rounds reach clients: a `Transport` moves messages of one type and
returns the replies that came back.

Flower's Grid (`server.app.GridTransport`) and direct calls in one process
(`simulations.inprocess.InProcessTransport`) both move the same prunus
`Content`, so both count the same bytes and give the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from prunus.common.payload import Content


@dataclass(frozen=True)
class Outgoing:
    """One message to send: to a partition's node."""

    partition: int
    content: Content


@dataclass(frozen=True)
class Reply:
    """One reply, attributed by the transport (not by what the reply claims)."""

    partition: int
    node: int
    content: Content | None  # None when the client failed
    error: str = ""


class Transport(Protocol):
    """Delivers messages of one type and returns the replies that came back."""

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]: ...
