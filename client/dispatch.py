"""Which handler answers each message, what it does with the state, and what wraps it.

Both engines answer a message here: the ClientApp (`client.app`) and the
in-process engine (`simulations.inprocess`) each give their state home
(`client.state`) and nothing else differs. The training handler is wrapped in
the experiment switches (`client.faults.mod`), as Flower's client mods wrap
a ClientApp.
"""

from __future__ import annotations

from prunus.client import faults, handlers, secure
from prunus.client.handlers import ClientData
from prunus.client.state import Handler, StateHome, Use, serve
from prunus.common.compression.base import ROW_QUERY
from prunus.common.config import Config
from prunus.common.payload import Content, MessageType
from prunus.common.secagg import messages as secagg

USES = {
    MessageType.TRAIN: Use(reads=None, writes=True),
    MessageType.EVALUATE: Use(reads=handlers.READ_ONLY_STATE),
    ROW_QUERY: Use(reads=None, needs_state=False),
    secagg.KEYS: Use(reads=None, needs_state=False, scratch=secagg.RECORD),
    secagg.SHARES: Use(reads=None, needs_state=False, scratch=secagg.RECORD),
    secagg.SECURE_TRAIN: Use(reads=None, writes=True, scratch=secagg.RECORD),
    secagg.UNMASK: Use(reads=None, needs_state=False, scratch=secagg.RECORD),
}
HANDLERS = {MessageType.EVALUATE: handlers.evaluate, ROW_QUERY: handlers.request_rows, secagg.KEYS: secure.keys,
            secagg.SHARES: secure.shares, secagg.UNMASK: secure.unmask}
TRAINING = {MessageType.TRAIN: handlers.train, secagg.SECURE_TRAIN: secure.train}  # wrapped in the fault switches


def handler_for(message_type: str, isolated: bool = True) -> Handler:
    """The handler of a message type, wrapped; `isolated`: whether the client
    runs in a process of its own, which a hung client may sleep in past the
    round timeout and a dying one may end (`faults.mod`)."""
    if message_type in TRAINING:
        return faults.mod(TRAINING[message_type], isolated)
    if message_type in HANDLERS:
        return HANDLERS[message_type]
    raise ValueError(f"no handler for message type {message_type!r}")


def answer(message_type: str, cfg: Config, content: Content, home: StateHome, client: ClientData,
           isolated: bool = True) -> Content:
    """The reply content to one message."""
    return serve(handler_for(message_type, isolated), USES[message_type], cfg, content, home, client)
