"""Planning a round's messages: which rows each client gets, and the broadcast itself.

The row selection decides the item rows each message carries (every row; the
rows a client asks for, after a row query; or rows the server picks); the
downlink method encodes them. Every message is counted in the ledger, the
whole-model message built and counted once however many clients get it.
"""

from __future__ import annotations

import logging

import numpy as np

from prunus.common.codec_rows import encode_row_set
from prunus.common.compression import BroadcastContext, DownlinkMethod, RowSelection
from prunus.common.compression.base import ROW_QUERY, RowIds, take_rows
from prunus.common.compression.broadcast import beyond
from prunus.common.params import Params, check_finite, npy_array, wire_bytes, wire_bytes_with_part
from prunus.common.payload import Arrays, ConfigMap, Content
from prunus.server.intake import Intake
from prunus.server.ledger import RoundLog
from prunus.server.transport import Outgoing, Transport
from prunus.server.validation import validate_row_request

log = logging.getLogger("prunus")


def row_query(server_round: int, purpose: str) -> Content:
    """A row query: the round and the purpose ("train" or "evaluate") of the message that follows it."""
    return Content({"config": ConfigMap({"server-round": server_round, "purpose": purpose})})


class Broadcaster:
    """Builds each round's messages of the global model to the chosen partitions."""

    def __init__(self, downlink: DownlinkMethod, rows: RowSelection, item_tables: tuple[str, ...], n_items: int,
                 seed: int, intake: Intake) -> None:
        self.downlink, self.rows, self.item_tables, self.n_items = downlink, rows, item_tables, n_items
        self.seed, self.intake = seed, intake
        self.sent: dict[int, RowIds | None] = {}  # the last messages' rows per partition
        self._payload: tuple[Params, int, Arrays] | None = None  # (params, round, whole broadcast), encoded once
        self._named: tuple[np.ndarray, Arrays] | None = None  # rows chosen by the server, as a row set
        self._checked: tuple[Params, int] | None = None  # (model, round) last checked for the broadcast

    def messages(self, server_round: int, params: Params, chosen: list[int], purpose: str,
                 transport: Transport, extra: Content | None = None) -> list[Outgoing]:
        """The round's messages of `purpose` ("train" or "evaluate") to the chosen
        partitions: each carries the rows the row selection gives it (after a
        row query, when the selection asks clients); a client whose query
        failed or was rejected gets none."""
        if self.rows.queries:
            requests = self._query_rows(server_round, chosen, purpose, transport)
        else:
            requests = dict.fromkeys(chosen)
        self.sent, tables = {}, {}
        for partition, request in requests.items():
            ids = self.rows.rows(server_round, request, self.n_items, purpose, self.seed)
            # rows the server chose for every client: one object, one message (`broadcast`)
            self.sent[partition] = None if ids is None else tables.setdefault(id(ids), dict.fromkeys(self.item_tables,
                                                                                                      ids))
        return self.broadcast(server_round, params, self.sent, extra)

    def asked_rows(self) -> dict[int, np.ndarray | None]:
        """The rows each partition of the last messages asked for (None: it did not choose)."""
        return {p: (ids[self.item_tables[0]] if ids and self.rows.queries else None) for p, ids in self.sent.items()}

    def _query_rows(self, server_round: int, chosen: list[int], purpose: str,
                    transport: Transport) -> dict[int, np.ndarray]:
        """Ask each chosen client which item rows it needs; returns the checked requests."""
        query = row_query(server_round, purpose)
        entry = self.intake.ledger.round(server_round)
        entry.request_bytes += wire_bytes(query) * len(chosen)
        replies = transport.exchange(ROW_QUERY, [Outgoing(p, query) for p in chosen])
        checked = self.intake.collect(server_round, "rows", replies, chosen,
                                      lambda reply: validate_row_request(reply.content, self.n_items),
                                      self.intake.count_request)
        for c in checked:
            self.intake.log_reply(server_round, "rows", c.reply, "accepted", c.sent)
        return {c.reply.partition: c.value for c in checked}

    def broadcast(self, server_round: int, params: Params, rows: dict[int, RowIds | None],
                  extra: Content | None = None) -> list[Outgoing]:
        """The global parameters (downlink method applied; the given rows of the
        item tables, or all of them) to each partition, every message counted;
        `extra`: records every message carries beside them (a secure round's
        shared factors), counted as downlink too."""
        entry, messages = self.intake.ledger.round(server_round), []
        self._check(server_round, params, entry)
        # a message that many clients get (the whole model, or rows the server
        # chose for all of them: one `ids` object) is built and sized once
        built: dict[int, tuple[Content, int, int, int]] = {}
        for partition, ids in rows.items():
            if id(ids) in built:
                record, sent, arrays_sent, nnz = built[id(ids)]
            else:
                record = Content({"arrays": self._arrays(server_round, params, ids),
                                  "config": ConfigMap({"server-round": server_round}), **(extra or {})})
                if ids is not None and not self.rows.queries:  # rows the client did not choose: name them
                    record["rows"] = self._row_set(next(iter(ids.values())))
                sent, arrays_sent = wire_bytes_with_part(record, record["arrays"])
                nnz = sum(int(np.count_nonzero(v)) for v in take_rows(params, ids).values())
                if ids is None or not self.rows.queries:
                    built[id(ids)] = (record, sent, arrays_sent, nnz)
            entry.downlink_bytes += sent
            entry.dense_downlink_bytes += sent - arrays_sent + self.intake.dense_array_bytes
            entry.downlink_nnz += nnz
            messages.append(Outgoing(partition, record))
        return messages

    def _check(self, server_round: int, params: Params, entry: RoundLog) -> None:
        """Before a model's first broadcast of a round: `NonFiniteModel` unless
        it is finite, and the entries the downlink clips to its range counted
        (`downlink-clipped` in rounds.csv where there are any; the model still travels)."""
        if self._checked is not None and self._checked[0] is params and self._checked[1] == server_round:
            return
        check_finite(params, "the model to broadcast")
        clipped = beyond(params, self.downlink.limit)
        if clipped:
            entry.metrics["downlink-clipped"] = entry.metrics.get("downlink-clipped", 0.0) + clipped
            log.warning("round %d: %d model entries beyond the %s broadcast's range +-%g were clipped",
                        server_round, clipped, self.downlink.name, self.downlink.limit)
        self._checked = (params, server_round)

    def _row_set(self, ids: np.ndarray) -> Arrays:
        if self._named is None or self._named[0] is not ids:
            self._named = (ids, Arrays({"ids": npy_array(np.frombuffer(encode_row_set(ids, self.n_items), np.uint8))}))
        return self._named[1]

    def _arrays(self, server_round: int, params: Params, ids: RowIds | None) -> Arrays:
        ctx = BroadcastContext(server_round, self.seed, ids)
        if ids is not None:
            return self.downlink.encode(params, ctx)
        if self._payload is None or self._payload[0] is not params or self._payload[1] != server_round:
            self._payload = (params, server_round, self.downlink.encode(params, ctx))
        return self._payload[2]
