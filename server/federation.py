"""The rounds of a federation, in one place and free of Flower's runtime.

Sampling, the broadcast (row selection and downlink method: with a partial
broadcast, a row query to each client first), reply validation (uplink method),
aggregation, the server optimiser, model pruning, federated and central
evaluation and the byte ledger all happen here. How messages reach clients is
a `Transport`: Flower's Grid (`server.app`) or direct calls in one process
(`simulations.inprocess`); both move the same `Content`s, so both count the
same bytes and give the same model.

Sampling and aggregation order depend only on the seed, the round and the
partition ids, so a run gives the same model whatever order clients reply in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from prunus.common.payload import Arrays, ConfigMap, Content, MessageType

from prunus.common.codec_rows import encode_row_set
from prunus.common.compression import DOWNLINK, ROWS, UPLINK, BroadcastContext, RoundContext
from prunus.common.compression.base import ROW_QUERY, RowIds, take_rows
from prunus.common.config import Config
from prunus.common.models import ModelSpec
from prunus.common.params import Params, npy_array, to_record, wire_bytes, wire_bytes_with_part
from prunus.common.update import Update, sent_entries
from prunus.server.aggregation import aggregate
from prunus.server.checkpoint import Checkpoint
from prunus.server.leakage import LeakageMeter
from prunus.server.ledger import Ledger, ReplyLog, RoundLog, safe_cell
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizer import ServerOptimizer
from prunus.server.robust import clip, coordinate_wise, outliers
from prunus.server.validation import (
    ReplyError,
    check_rows,
    validate_evaluate_reply,
    validate_row_request,
    validate_train_reply,
)

log = logging.getLogger("prunus")

TRAIN_STREAM, EVAL_STREAM = 0, 1


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


Evaluator = Callable[[Params], dict[str, float]]
T = TypeVar("T")


class Federation:
    """Holds the global shared parameters and runs rounds over a transport."""

    def __init__(self, cfg: Config, partitions: list[int], params: Params, spec: ModelSpec,
                 evaluator: Evaluator, ledger: Ledger | None = None, leakage: LeakageMeter | None = None) -> None:
        self.cfg = cfg
        self.partitions = sorted(partitions)
        self.params = params
        self.shapes = {name: value.shape for name, value in params.items()}
        self.evaluator = evaluator
        self.leakage = leakage
        self.ledger = ledger or Ledger()
        self.uplink = UPLINK.get(cfg.compression.prune_method)(cfg.compression)
        self.downlink = DOWNLINK.get(cfg.compression.downlink_codec)(cfg.compression)
        self.rows = ROWS.get(cfg.compression.broadcast_rows)(cfg.compression)
        self.item_tables = spec.item_tables
        self.n_items = params[spec.item_tables[0]].shape[0] if spec.item_tables else 0
        f = cfg.federation
        self.optimizer = ServerOptimizer(f.server_optimizer, f.server_lr, f.server_momentum, f.server_beta2, f.server_eps)
        self.pruner = ModelPruner(cfg.compression, list(spec.prunable))
        # bytes of the shared parameters as dense float32 arrays: the yardstick
        # for the dense-equivalent columns of the ledger
        self.dense_array_bytes = wire_bytes(to_record(params))
        self._payload: tuple[Params, int, Arrays] | None = None  # (params, round, whole broadcast), encoded once
        self._sent: dict[int, RowIds | None] = {}  # this round's rows per partition
        self._named: tuple[np.ndarray, Arrays] | None = None  # rows chosen by the server, as a row set

    # ------------------------------------------------------------------ run
    def run(self, transport: Transport, on_round: Callable[[RoundLog], None] = lambda entry: None,
            start: int = 1) -> Params:
        """Evaluate the initial model, then train `rounds` rounds (from round
        `start` when resuming a checkpoint); returns the final parameters."""
        if start == 1:
            self.evaluate(0, time.perf_counter())
            on_round(self.ledger.round(0))
        for server_round in range(start, self.cfg.federation.rounds + 1):
            started = time.perf_counter()
            self.train(server_round, transport)
            self.federated_evaluation(server_round, transport)
            self.evaluate(server_round, started)
            on_round(self.ledger.round(server_round))
        return self.params

    def snapshot(self, server_round: int) -> Checkpoint:
        """Everything the server needs to go on after `server_round` (`server.checkpoint`)."""
        return Checkpoint(server_round, self.params, self.optimizer.state(), self.rows.state(), self.ledger,
                          self.cfg.to_dict())

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take up a checkpoint's model, optimiser and selection state and ledger."""
        self.params = {name: checkpoint.params[name].astype(np.float32) for name in self.shapes}
        self.optimizer.restore(checkpoint.optimizer)
        self.rows.restore(checkpoint.selection)
        # the checkpoint's round 0 (first discovery, initial evaluation) replaces a resumed discovery's
        self.ledger.rounds, self.ledger.replies = checkpoint.ledger.rounds, checkpoint.ledger.replies

    def sample(self, server_round: int, count: int, stream: int) -> list[int]:
        """`count` partitions drawn from (seed, round, stream) alone."""
        rng = np.random.default_rng([self.cfg.runtime.seed, server_round, stream])
        count = min(count, len(self.partitions))
        chosen = np.sort(rng.choice(len(self.partitions), size=count, replace=False))
        return [self.partitions[i] for i in chosen]

    def is_eval_round(self, server_round: int) -> bool:
        return server_round % self.cfg.evaluation.eval_every == 0 or server_round == self.cfg.federation.rounds

    # ---------------------------------------------------------------- train
    def train(self, server_round: int, transport: Transport) -> None:
        """One training round: broadcast, collect, validate, aggregate, step, prune."""
        chosen = self.sample(server_round, self.cfg.federation.clients_per_round, TRAIN_STREAM)
        entry = self.ledger.round(server_round)
        entry.clients = len(chosen)
        replies = transport.exchange(MessageType.TRAIN, self.messages(server_round, chosen, "train", transport))
        accepted: list[tuple[int, int, Update, float, float]] = []
        checked = self._collect(server_round, "train", replies, list(self._sent),
                                lambda reply: self._check_train(reply, server_round))
        for reply, sent, (update, num_examples, loss) in checked:
            nnz = sum(sent_entries(t) for t in update.values())
            entry.uplink_nnz += nnz
            self._log_reply(server_round, "train", reply, "accepted", sent, nnz)
            accepted.append((reply.partition, reply.node, update, num_examples, loss))
        entry.replies = len(accepted)
        if self.leakage is not None:
            asked = {p: (ids[self.item_tables[0]] if ids and self.rows.queries else None) for p, ids in self._sent.items()}
            seen = sorted((p, update, asked[p]) for p, _, update, _, _ in accepted)
            entry.metrics |= self.leakage.measure(server_round, seen)
        accepted = [item for item in accepted if item[3] > 0]  # a client with nothing to train on sent nothing
        if not accepted:
            log.warning("round %d: no usable replies; global model unchanged", server_round)
            return
        accepted.sort(key=lambda item: (item[0], item[1]))
        self._step(server_round, accepted)
        reported = [(n, loss) for _, _, _, n, loss in accepted if not np.isnan(loss)]  # replies may omit their loss
        if reported:
            examples, losses = np.array(reported).T
            entry.train_loss = float((examples * losses).sum() / examples.sum())

    def _step(self, server_round: int, accepted: list[tuple[int, int, Update, float, float]]) -> None:
        """Clip, aggregate, step, prune; a step that would leave the model
        non-finite or not encodable for the broadcast is refused with its
        reason, and the previous model (and optimiser state) kept."""
        f, entry = self.cfg.federation, self.ledger.round(server_round)
        dropped = outliers([update for _, _, update, _, _ in accepted], f.zero_factor)
        if dropped:
            entry.zeroed = len(dropped)
            log.warning("round %d: left out %d replies whose norm exceeds %g x the median (partitions %s)",
                        server_round, len(dropped), f.zero_factor, [accepted[i][0] for i in dropped][:10])
            accepted = [item for i, item in enumerate(accepted) if i not in set(dropped)]
            if not accepted:
                return
        updates = [update for _, _, update, _, _ in accepted]
        if f.clip_norm > 0 or f.clip_quantile > 0:
            updates, entry.clipped = clip(updates, f.clip_norm, f.clip_quantile)
        if f.aggregator == "mean":
            weights = [1.0 if f.row_averaging else n for _, _, _, n, _ in accepted]
            step = aggregate(list(zip(updates, weights)), self.shapes, f.row_averaging)
        else:
            step = coordinate_wise(updates, self.shapes, f.trim_fraction if f.aggregator == "trimmed-mean" else None)
        saved = self.optimizer.state()
        params = self.pruner.prune(self.optimizer.step(self.params, step), server_round)
        try:
            bad = sorted(name for name, value in params.items() if not np.isfinite(value).all())
            if bad:
                raise ValueError(f"non-finite values in {bad}")
            self.downlink.encode(params, BroadcastContext(server_round, self.cfg.runtime.seed))
        except ValueError as err:
            self.optimizer.restore(saved)
            entry.refused = 1
            log.warning("round %d: step refused, previous model kept: %s", server_round, err)
            return
        self.params = params
        self.rows.observe(server_round, step, self.item_tables)

    def _check_train(self, reply: Reply, server_round: int) -> tuple[Update, float, float]:
        ctx = RoundContext(server_round, reply.partition, self.cfg.runtime.seed)
        checked = validate_train_reply(reply.content, self.shapes, self.uplink, ctx)
        check_rows(checked[0], self._sent[reply.partition])
        return checked

    # ------------------------------------------------------------ broadcast
    def messages(self, server_round: int, chosen: list[int], purpose: str, transport: Transport) -> list[Outgoing]:
        """The round's messages of `purpose` ("train" or "evaluate") to the chosen
        partitions: each carries the rows the row selection gives it (after a
        row query, when the selection asks clients); a client whose query
        failed or was rejected gets none."""
        if self.rows.queries:
            requests = self._query_rows(server_round, chosen, purpose, transport)
        else:
            requests = dict.fromkeys(chosen)
        self._sent = {}
        for partition, request in requests.items():
            ids = self.rows.rows(server_round, request, self.n_items, purpose, self.cfg.runtime.seed)
            self._sent[partition] = None if ids is None else dict.fromkeys(self.item_tables, ids)
        return self.broadcast(server_round, self._sent)

    def _query_rows(self, server_round: int, chosen: list[int], purpose: str,
                    transport: Transport) -> dict[int, np.ndarray]:
        """Ask each chosen client which item rows it needs; returns the checked requests."""
        query = Content({"config": ConfigMap({"server-round": server_round, "purpose": purpose})})
        entry = self.ledger.round(server_round)
        entry.request_bytes += wire_bytes(query) * len(chosen)
        replies = transport.exchange(ROW_QUERY, [Outgoing(p, query) for p in chosen])
        checked = self._collect(server_round, "rows", replies, chosen,
                                lambda reply: validate_row_request(reply.content, self.n_items), self._count_request)
        for reply, sent, _ in checked:
            self._log_reply(server_round, "rows", reply, "accepted", sent)
        return {reply.partition: ids for reply, _, ids in checked}

    def broadcast(self, server_round: int, rows: dict[int, RowIds | None]) -> list[Outgoing]:
        """The global parameters (downlink method applied; the given rows of the
        item tables, or all of them) to each partition, every message counted."""
        entry, messages = self.ledger.round(server_round), []
        whole: tuple[Content, int, int, int] | None = None  # the whole-model message, built and counted once
        for partition, ids in rows.items():
            if ids is None and whole is not None:
                record, sent, arrays_sent, nnz = whole
            else:
                record = Content({"arrays": self._arrays(server_round, ids),
                                     "config": ConfigMap({"server-round": server_round})})
                if ids is not None and not self.rows.queries:  # rows the client did not choose: name them
                    record["rows"] = self._row_set(next(iter(ids.values())))
                sent, arrays_sent = wire_bytes_with_part(record, record["arrays"])
                nnz = sum(int(np.count_nonzero(v)) for v in take_rows(self.params, ids).values())
                if ids is None:
                    whole = (record, sent, arrays_sent, nnz)
            entry.downlink_bytes += sent
            entry.dense_downlink_bytes += sent - arrays_sent + self.dense_array_bytes
            entry.downlink_nnz += nnz
            messages.append(Outgoing(partition, record))
        return messages

    def _row_set(self, ids: np.ndarray) -> Arrays:
        if self._named is None or self._named[0] is not ids:
            self._named = (ids, Arrays({"ids": npy_array(np.frombuffer(encode_row_set(ids, self.n_items), np.uint8))}))
        return self._named[1]

    def _arrays(self, server_round: int, ids: RowIds | None) -> Arrays:
        ctx = BroadcastContext(server_round, self.cfg.runtime.seed, ids)
        if ids is not None:
            return self.downlink.encode(self.params, ctx)
        if self._payload is None or self._payload[0] is not self.params or self._payload[1] != server_round:
            self._payload = (self.params, server_round, self.downlink.encode(self.params, ctx))
        return self._payload[2]

    # ----------------------------------------------------------- evaluation
    def federated_evaluation(self, server_round: int, transport: Transport) -> None:
        """Clients rank their own held-out items; example-weighted mean, summed in
        partition order so the result does not depend on reply order."""
        count = self.cfg.federation.federated_eval_clients
        if not count or not self.is_eval_round(server_round):
            return
        chosen = self.sample(server_round, count, EVAL_STREAM)
        replies = transport.exchange(MessageType.EVALUATE, self.messages(server_round, chosen, "evaluate", transport))
        entry = self.ledger.round(server_round)
        k = self.cfg.evaluation.top_k
        names = {f"hr@{k}", f"ndcg@{k}"}
        rows = []
        for reply, sent, (num_examples, metrics) in self._collect(
                server_round, "evaluate", replies, list(self._sent), lambda reply: validate_evaluate_reply(reply.content, names)):
            self._log_reply(server_round, "evaluate", reply, "accepted", sent)
            rows.append((reply.partition, num_examples, metrics))
        rows.sort(key=lambda row: row[0])
        total = sum(n for _, n, _ in rows)
        if total:
            averaged = {name: sum(n * m[name] for _, n, m in rows) / total for name in sorted(names)}
            entry.metrics |= {f"fed-{k}": float(v) for k, v in averaged.items()}

    def evaluate(self, server_round: int, started: float) -> None:
        """Central evaluation (round 0 and evaluation rounds); closes the round's timing."""
        entry = self.ledger.round(server_round)
        if server_round == 0 or self.is_eval_round(server_round):
            entry.metrics |= self.evaluator(self.params)
        entry.seconds = time.perf_counter() - started if server_round else 0.0

    def _collect(self, server_round: int, kind: str, replies: list[Reply], chosen: list[int],
                 check: Callable[[Reply], T],
                 count: Callable[[RoundLog, Content], int] | None = None) -> list[tuple[Reply, int, T]]:
        """Count every reply's bytes (`count`, default the uplink) and failures;
        accept a reply only from a partition asked this round, once (the first
        one counts), and when `check` passes; log each rejection with its
        reason. Returns `(reply, bytes, what check returned)` for the accepted ones."""
        count = count or self._count_uplink
        entry = self.ledger.round(server_round)
        asked, answered, accepted = set(chosen), set(), []
        for reply in replies:
            if reply.content is None:
                self._failed(server_round, kind, reply)
                continue
            sent = count(entry, reply.content)
            try:
                if reply.partition not in asked:
                    raise ReplyError(f"partition {reply.partition} was not asked in this round")
                if reply.partition in answered:
                    raise ReplyError(f"partition {reply.partition} already replied in this round")
                answered.add(reply.partition)
                accepted.append((reply, sent, check(reply)))
            except ReplyError as err:
                entry.rejected += 1
                self._log_reply(server_round, kind, reply, "rejected", sent)
                log.warning("round %d: rejected %s reply of partition %d: %s", server_round, kind, reply.partition, err)
        return accepted

    # ---------------------------------------------------------------- ledger
    def _count_uplink(self, entry: RoundLog, content: Content) -> int:
        """Bytes actually received, and what the same reply would cost dense."""
        arrays = content.get("arrays")
        arrays = arrays if isinstance(arrays, Arrays) else None
        sent, arrays_sent = wire_bytes_with_part(content, arrays)
        entry.uplink_bytes += sent
        entry.dense_uplink_bytes += sent - arrays_sent + (self.dense_array_bytes if arrays is not None else 0)
        return sent

    @staticmethod
    def _count_request(entry: RoundLog, content: Content) -> int:
        sent = wire_bytes(content)
        entry.request_bytes += sent
        return sent

    def _failed(self, server_round: int, kind: str, reply: Reply) -> None:
        self.ledger.round(server_round).failures += 1
        self._log_reply(server_round, kind, reply, "failed")
        log.warning("round %d: %s on partition %d failed: %s", server_round, kind, reply.partition, reply.error)

    def _log_reply(self, server_round: int, kind: str, reply: Reply, status: str, sent: int = 0, nnz: int = 0) -> None:
        """Where a reply came from (partition, host, Ray node) for clients.csv."""
        info = reply.content.get("info") if reply.content is not None else None
        info = info if isinstance(info, ConfigMap) else {}
        self.ledger.replies.append(ReplyLog(
            round=server_round, kind=kind, partition=reply.partition, node=reply.node,
            host=safe_cell(info.get("host", "")), ray_node=safe_cell(info.get("ray-node", "")),
            status=status, uplink_bytes=sent, uplink_nnz=nnz,
        ))
