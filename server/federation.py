"""The rounds of a federation, free of Flower's runtime.

`Federation` runs the rounds: sampling, then the rooms each round passes
through, one module each:

* `server.broadcast`: the messages of a round (row selection, row queries,
  the downlink method), every message counted;
* `server.intake`: every reply counted in the byte ledger, checked (the
  uplink method decodes it) and logged;
* `server.pipeline`: outliers, clipping, the aggregator, the server
  optimiser, model pruning, and the checks before a new model is taken;
* central evaluation (`server.evaluation`), federated evaluation here, and
  checkpoints (`server.checkpoint`) from `snapshot` / `restore`.

How messages reach clients is a `Transport` (`server.transport`): Flower's
Grid (`server.app`) or direct calls in one process (`simulations.inprocess`).
Sampling and aggregation order depend only on the seed, the round and the
partition ids, so a run gives the same model whatever order clients reply in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from prunus.common.compression import DOWNLINK, ROWS, UPLINK, BroadcastContext, RoundContext, make
from prunus.common.compression.uplink.lowrank import basis_content
from prunus.common.config import Config
from prunus.common.models import ModelSpec
from prunus.common.params import Params, check_finite, to_record, wire_bytes
from prunus.common.payload import MessageType
from prunus.common.update import Dense, sent_entries
from prunus.server.broadcast import Broadcaster
from prunus.server.checkpoint import Checkpoint
from prunus.server.intake import Intake, TrainReply
from prunus.server.leakage import LeakageMeter
from prunus.server.ledger import Ledger, RoundLog
from prunus.server.model_pruning import ModelPruner
from prunus.server.optimizers import server_optimizer
from prunus.server.pipeline import AggregationPipeline
from prunus.server.secure import SecureRounds
from prunus.server.transport import Outgoing, Reply, Transport
from prunus.server.validation import check_rows, validate_evaluate_reply, validate_train_reply

log = logging.getLogger("prunus")

TRAIN_STREAM, EVAL_STREAM = 0, 1

Evaluator = Callable[[Params, int], dict[str, float]]  # (model, round) -> metrics


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
        self.uplink = make(UPLINK, cfg.compression.prune_method, cfg)
        self.basis: Params | None = None  # the shared factors of this round's training messages
        self.received: Params | None = None  # this round's model as clients decode it (an uplink that reads it)
        downlink = make(DOWNLINK, cfg.compression.downlink_codec, cfg)
        self.downlink = downlink
        self.rows = make(ROWS, cfg.compression.broadcast_rows, cfg)
        self.item_tables = spec.item_tables
        n_items = params[spec.item_tables[0]].shape[0] if spec.item_tables else 0
        self.optimizer = server_optimizer(cfg.federation)
        self.intake = Intake(self.ledger, wire_bytes(to_record(params)))
        self.broadcaster = Broadcaster(downlink, self.rows, spec.item_tables, n_items, cfg.runtime.seed, self.intake)
        self.pipeline = AggregationPipeline(cfg.federation, self.shapes, self.optimizer,
                                            ModelPruner(cfg.compression, list(spec.prunable)))
        self.secure = SecureRounds(cfg, spec, self.uplink, self.intake, self.broadcaster) \
            if cfg.secure.secure_aggregation else None

    # ------------------------------------------------------------------ run
    def run(self, transport: Transport, on_round: Callable[[RoundLog], None] = lambda entry: None,
            start: int = 1) -> Params:
        """Evaluate the initial model, then train `rounds` rounds (from round
        `start` when resuming a checkpoint); returns the final parameters.
        `NonFiniteModel` before anything else if the model to start from is not
        finite (the rounds keep it so: `server.pipeline`)."""
        check_finite(self.params, "the model to start from")
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
                          self.cfg.to_dict(), self.leakage.state() if self.leakage is not None else {})

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take up a checkpoint's model, optimiser and selection state, linked leakage state and ledger."""
        self.params = {name: checkpoint.params[name].astype(np.float32) for name in self.shapes}
        self.optimizer.restore(checkpoint.optimizer)
        self.rows.restore(checkpoint.selection)
        if self.leakage is not None:
            self.leakage.restore(checkpoint.leakage)
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

    def messages(self, server_round: int, chosen: list[int], purpose: str, transport: Transport) -> list[Outgoing]:
        """The round's messages of `purpose` to the chosen partitions (`server.broadcast`);
        a training message also carries the uplink's shared factors, if it has any."""
        self.basis = self.uplink.round_basis(self.params, self.cfg.runtime.seed, server_round) if purpose == "train" else None
        if purpose == "train" and self.uplink.reads_model:  # every client of a round decodes the same value for a row
            ctx = BroadcastContext(server_round, self.cfg.runtime.seed)
            self.received = self.downlink.decode(self.downlink.encode(self.params, ctx), self.shapes)
        return self.broadcaster.messages(server_round, self.params, chosen, purpose, transport,
                                         basis_content(self.basis))

    # ---------------------------------------------------------------- train
    def train(self, server_round: int, transport: Transport) -> None:
        """One training round: broadcast, collect, validate, aggregate, step, prune."""
        chosen = self.sample(server_round, self.cfg.federation.clients_per_round, TRAIN_STREAM)
        entry = self.ledger.round(server_round)
        entry.clients = len(chosen)
        if self.secure is not None:
            self._secure_train(server_round, chosen, transport, entry)
            return
        replies = transport.exchange(MessageType.TRAIN, self.messages(server_round, chosen, "train", transport))
        sent_rows = self.broadcaster.sent
        accepted: list[TrainReply] = []
        lines = {}  # each accepted reply's line in clients.csv, for what the defences do to it
        for c in self.intake.collect(server_round, "train", replies, list(sent_rows),
                                     lambda reply: self._check_train(reply, server_round, sent_rows)):
            update, num_examples, loss = c.value
            nnz = sum(sent_entries(t) for t in update.values())
            entry.uplink_nnz += nnz
            lines[c.reply.partition] = self.intake.log_reply(server_round, "train", c.reply, "accepted", c.sent, nnz)
            accepted.append(TrainReply(c.reply.partition, c.reply.node, update, num_examples, loss))
        entry.replies = len(accepted)
        if self.leakage is not None:
            asked = self.broadcaster.asked_rows()
            seen = sorted((r.partition, r.update, asked[r.partition]) for r in accepted)
            entry.metrics |= self.leakage.measure(server_round, seen, final=server_round == self.cfg.federation.rounds)
        accepted = [r for r in accepted if r.num_examples > 0]  # a client with nothing to train on sent nothing
        if not accepted:
            log.warning("round %d: no usable replies; global model unchanged", server_round)
            return
        accepted.sort(key=lambda r: (r.partition, r.node))
        outcome = self.pipeline.step(server_round, self.params, accepted, entry)
        for partition, note in outcome.notes.items():
            lines[partition].defence, lines[partition].reason = note.defence, note.reason
        if outcome.model is not None:
            self.params = outcome.model
            self.rows.observe(server_round, outcome.step, self.item_tables)
        reported = [(r.num_examples, r.loss) for r in accepted if not np.isnan(r.loss)]  # replies may omit their loss
        if reported:
            examples, losses = np.array(reported).T
            entry.train_loss = float((examples * losses).sum() / examples.sum())

    def _secure_train(self, server_round: int, chosen: list[int], transport: Transport, entry: RoundLog) -> None:
        """A round whose step the server learns only as a sum (`server.secure`)."""
        step = self.secure.train(server_round, chosen, self.params, transport, entry)
        if self.leakage is not None:  # attacked: what the server holds, masked inputs and the round's step
            layout, ring, inputs = self.secure.held
            naive = [(p, _as_update(layout.decode(masked, 1, ring, self.cfg.federation.row_averaging)[0]), None)
                     for p, masked in sorted(inputs.items())]  # a masked input decoded as if it were the update
            entry.metrics |= self.leakage.measure(server_round, naive, None if step is None else _as_update(step),
                                                  final=server_round == self.cfg.federation.rounds)
        new = None if step is None else self.pipeline.apply(server_round, self.params, step, entry)
        if new is not None:
            self.params = new
            self.rows.observe(server_round, step, self.item_tables)

    def _check_train(self, reply: Reply, server_round: int, sent_rows: dict) -> tuple:
        ctx = RoundContext(server_round, reply.partition, self.cfg.runtime.seed, basis=self.basis, model=self.received)
        checked = validate_train_reply(reply.content, self.shapes, self.uplink, ctx)
        check_rows(checked[0], sent_rows[reply.partition])
        return checked

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
        for c in self.intake.collect(server_round, "evaluate", replies, list(self.broadcaster.sent),
                                     lambda reply: validate_evaluate_reply(reply.content, names)):
            self.intake.log_reply(server_round, "evaluate", c.reply, "accepted", c.sent)
            num_examples, metrics = c.value
            rows.append((c.reply.partition, num_examples, metrics))
        rows.sort(key=lambda row: row[0])
        total = sum(n for _, n, _ in rows)
        if total:
            averaged = {name: sum(n * m[name] for _, n, m in rows) / total for name in sorted(names)}
            entry.metrics |= {f"fed-{k}": float(v) for k, v in averaged.items()}

    def evaluate(self, server_round: int, started: float) -> None:
        """Central evaluation (round 0 and evaluation rounds); closes the round's timing."""
        entry = self.ledger.round(server_round)
        if server_round == 0 or self.is_eval_round(server_round):
            entry.metrics |= self.evaluator(self.params, server_round)
        entry.seconds = time.perf_counter() - started if server_round else 0.0


def _as_update(params: Params) -> dict[str, Dense]:
    return {name: Dense(value) for name, value in params.items()}
