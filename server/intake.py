"""Reply intake: every reply counted in the byte ledger, checked, and logged.

A reply is accepted only from a partition asked this round, once (the first
one counts), and when its check passes; failed and rejected replies are
logged with their reasons (`server.reply_errors`: one console line per kind
of failure) and the round goes on. Bytes are those of the content the
transport delivered (`common.wire_size`), counted before any check; a
content no message can carry (`NotCarried`: only an in-process client could
hand one over) is rejected uncounted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prunus.common.params import wire_bytes, wire_bytes_with_part
from prunus.common.payload import Arrays, ConfigMap, Content
from prunus.common.update import Update
from prunus.common.wire_size import NotCarried
from prunus.server import reply_errors
from prunus.server.ledger import MAX_REASON, Ledger, ReplyLog, RoundLog, safe_cell
from prunus.server.transport import Reply
from prunus.server.validation import ReplyError

T = TypeVar("T")


@dataclass(frozen=True)
class Checked:
    """A reply that passed intake: its bytes and what its check returned."""

    reply: Reply
    sent: int
    value: object


@dataclass(frozen=True)
class TrainReply:
    """An accepted training reply, decoded."""

    partition: int
    node: int
    update: Update
    num_examples: float
    loss: float  # NaN when the reply reports none


Count = Callable[[RoundLog, Content], int]


class Intake:
    """Counts, checks and logs the replies of each round in `ledger`."""

    def __init__(self, ledger: Ledger, dense_array_bytes: int) -> None:
        self.ledger = ledger
        # bytes of the shared parameters as dense float32 arrays: the yardstick
        # for the dense-equivalent columns of the ledger
        self.dense_array_bytes = dense_array_bytes

    def collect(self, server_round: int, kind: str, replies: list[Reply], chosen: list[int],
                check: Callable[[Reply], T], count: Count | None = None) -> list[Checked]:
        """Count every reply's bytes (`count`, default the uplink) and failures;
        returns the accepted replies with what `check` returned for each."""
        count = count or self.count_uplink
        entry = self.ledger.round(server_round)
        asked, answered, accepted = set(chosen), set(), []
        failed: list[tuple[int, str]] = []
        rejected: list[tuple[int, str]] = []
        for reply in replies:
            if reply.content is None:
                entry.failures += 1
                self.log_reply(server_round, kind, reply, "failed", reason=reply.error)
                failed.append((reply.partition, reply.error))
                continue
            sent, uncarried = self._count(count, entry, reply.content)
            try:
                if reply.partition not in asked:
                    raise ReplyError(f"partition {reply.partition} was not asked in this round")
                if reply.partition in answered:
                    raise ReplyError(f"partition {reply.partition} already replied in this round")
                answered.add(reply.partition)
                if uncarried:
                    raise ReplyError(uncarried)
                accepted.append(Checked(reply, sent, check(reply)))
            except ReplyError as err:
                entry.rejected += 1
                self.log_reply(server_round, kind, reply, "rejected", sent, reason=str(err))
                rejected.append((reply.partition, f"{type(err).__name__}: {err}"))
        reply_errors.report(server_round, kind, "failed", failed)  # one console line per kind of failure
        reply_errors.report(server_round, kind, "rejected", rejected)
        return accepted

    @staticmethod
    def _count(count: Count, entry: RoundLog, content: Content) -> tuple[int, str]:
        """The reply's bytes, counted; or 0 and why for a content no message
        can carry (no transport ships one: only an in-process client could
        hand it over), which is then rejected."""
        try:
            return count(entry, content), ""
        except NotCarried as err:
            return 0, f"reply content no message can carry: {err}"

    def count_uplink(self, entry: RoundLog, content: Content) -> int:
        """Bytes actually received, and what the same reply would cost dense
        (its payload, plain or secure, replaced by dense float32 arrays)."""
        arrays = content.get("arrays", content.get("masked"))
        arrays = arrays if isinstance(arrays, Arrays) else None
        sent, arrays_sent = wire_bytes_with_part(content, arrays)
        entry.uplink_bytes += sent
        entry.dense_uplink_bytes += sent - arrays_sent + (self.dense_array_bytes if arrays is not None else 0)
        return sent

    @staticmethod
    def count_request(entry: RoundLog, content: Content) -> int:
        sent = wire_bytes(content)
        entry.request_bytes += sent
        return sent

    @staticmethod
    def count_protocol(entry: RoundLog, content: Content) -> int:
        sent = wire_bytes(content)
        entry.protocol_bytes += sent
        return sent

    def log_reply(self, server_round: int, kind: str, reply: Reply, status: str, sent: int = 0, nnz: int = 0,
                  reason: str = "") -> ReplyLog:
        """Where a reply came from (partition, host, Ray node, CUDA device) for
        clients.csv, and why it was rejected or failed (the first line); returns the line."""
        info = reply.content.get("info") if reply.content is not None else None
        info = info if isinstance(info, ConfigMap) else {}
        line = ReplyLog(
            round=server_round, kind=kind, partition=reply.partition, node=reply.node,
            host=safe_cell(info.get("host", "")), ray_node=safe_cell(info.get("ray-node", "")),
            status=status, uplink_bytes=sent, uplink_nnz=nnz,
            reason=safe_cell(reason.strip().split("\n")[0], MAX_REASON),
            cuda_device=safe_cell(info.get("cuda-device", "")),
            cuda_peak_bytes=_claimed_count(info.get("cuda-peak-bytes", 0)),
        )
        self.ledger.replies.append(line)
        return line


def _claimed_count(value: object) -> int:
    """A byte count a client claims, for clients.csv: a non-negative int, else 0."""
    return value if type(value) is int and value >= 0 else 0
