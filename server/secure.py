"""A securely aggregated training round, on the server: the four exchanges of
`common/secagg/` over the transport, every message counted, every reply
checked, and the round's mean step recovered from the masked inputs alone.

The server never sees one client's update: it gets masked inputs and, after
unmasking, their sum. It cannot zero or clip single replies either; the
ring's clip (`ring-clip`) bounds what any client adds to a coordinate. A
client whose protocol message is malformed is rejected with its reason and
left out from then on; too few left to recover the sum: the round is
abandoned (`secure-abandoned`) and the model kept, never a wrong sum.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prunus.common.compression import UplinkMethod
from prunus.common.compression.uplink.lowrank import basis_content
from prunus.common.config import Config
from prunus.common.models import ModelSpec
from prunus.common.params import Params, wire_bytes
from prunus.common.payload import Content
from prunus.common.secagg import messages
from prunus.common.secagg.protocol import ProtocolError, RoundAbandoned, ServerRound
from prunus.server.broadcast import Broadcaster
from prunus.server.intake import Count, Intake
from prunus.server.ledger import RoundLog
from prunus.server.transport import Outgoing, Reply, Transport
from prunus.server.validation import ReplyError, check_beside

log = logging.getLogger("prunus")


class SecureRounds:
    """Runs the training exchanges of a round under secure aggregation."""

    def __init__(self, cfg: Config, spec: ModelSpec, uplink: UplinkMethod, intake: Intake,
                 broadcaster: Broadcaster) -> None:
        self.cfg, self.spec, self.uplink, self.intake, self.broadcaster = cfg, spec, uplink, intake, broadcaster
        self.held: tuple | None = None  # the last round's (layout, ring, masked input of each client)

    def train(self, server_round: int, chosen: list[int], params: Params, transport: Transport,
              entry: RoundLog) -> Params | None:
        """The round's mean step, or None when the round is abandoned."""
        rows = self.broadcaster.rows.rows(server_round, None, self.broadcaster.n_items, "train", self.cfg.runtime.seed)
        basis = self.uplink.round_basis(params, self.cfg.runtime.seed, server_round)
        layout = messages.round_layout(self.cfg, server_round, self.spec, rows, basis)
        setup = messages.round_setup(self.cfg, chosen, server_round)
        server = ServerRound(setup, layout.length(setup.ring))
        request = messages.keys_request(server_round, chosen)
        self._exchange(transport, server_round, messages.KEYS, {p: request for p in chosen}, "secagg-keys",
                       lambda reply: server.take_keys(reply.partition, *messages.read_keys(reply.content)))
        self._exchange(transport, server_round, messages.SHARES,
                       {p: messages.shares_request(server_round, server.peers_of(p)) for p in sorted(server.keys)},
                       "secagg-shares", lambda reply: server.take_shares(reply.partition,
                                                                         messages.read_sealed(reply.content)))
        sent = None if rows is None else dict.fromkeys(self.spec.item_tables, rows)  # the same for every client
        broadcast = {o.partition: o.content for o in self.broadcaster.broadcast(
            server_round, params, dict.fromkeys(sorted(server.shares), sent), basis_content(basis))}
        trains, base_bytes = {}, {}  # the round's broadcast is one content: sized once
        for p, base in broadcast.items():  # the broadcast, and the shares routed to this client (protocol bytes)
            trains[p] = Content({**base, messages.RECORD: messages.sealed_map(server.routed_to(p))})
            if id(base) not in base_bytes:
                base_bytes[id(base)] = wire_bytes(base)
            entry.protocol_bytes += wire_bytes(trains[p]) - base_bytes[id(base)]
        self._exchange(transport, server_round, messages.SECURE_TRAIN, trains, "train",
                       lambda reply: server.take_input(reply.partition, messages.read_masked(
                           reply.content, setup.ring, server.length)), count=self.intake.count_uplink, counted=True)
        if self.cfg.evaluation.leakage_sample:  # what the server holds of each client, for server.leakage's attacks
            self.held = (layout, setup.ring, dict(server.inputs))
        self._exchange(transport, server_round, messages.UNMASK,
                       {p: messages.unmask_request(server_round, *server.unmask_request(p)) for p in sorted(server.inputs)},
                       "secagg-unmask", lambda reply: server.take_answer(reply.partition,
                                                                         messages.read_unmask_reply(reply.content)))
        try:
            total, members = server.total()
        except RoundAbandoned as err:
            entry.metrics["secure-abandoned"] = 1.0
            log.warning("round %d: secure aggregation abandoned, model kept: %s", server_round, err)
            return None
        entry.replies = len(members)
        step, clipped = layout.decode(total, len(members), setup.ring, self.cfg.federation.row_averaging)
        entry.metrics["ring-clipped"] = float(clipped)
        return step

    def _exchange(self, transport: Transport, server_round: int, message_type: str, contents: dict[int, Content],
                  kind: str, take: Callable[[Reply], None], count: Count | None = None, counted: bool = False) -> None:
        """Send each partition its content (counted as protocol bytes unless
        `counted` already), take each reply with `take` (ProtocolError: rejected)
        once what it carries beside its payload is within bounds."""
        entry = self.intake.ledger.round(server_round)
        if not counted:
            sizes: dict[int, int] = {}
            for content in contents.values():  # a content shared by many messages is sized once
                if id(content) not in sizes:
                    sizes[id(content)] = wire_bytes(content)
            entry.protocol_bytes += sum(sizes[id(c)] for c in contents.values())
        replies = transport.exchange(message_type, [Outgoing(p, c) for p, c in contents.items()])
        payload = "masked" if message_type == messages.SECURE_TRAIN else messages.RECORD
        for checked in self.intake.collect(server_round, kind, replies, list(contents), _checked(take, payload),
                                           count or self.intake.count_protocol):
            self.intake.log_reply(server_round, kind, checked.reply, "accepted", checked.sent)


def _checked(take: Callable[[Reply], None], payload: str) -> Callable[[Reply], None]:
    """`take`, after the records beside the reply's `payload` are checked; ProtocolError as ReplyError."""

    def check(reply: Reply) -> None:
        check_beside(reply.content, payload)
        try:
            take(reply)
        except ProtocolError as err:
            raise ReplyError(str(err)) from None

    return check
