"""The prunus strategy: Flower's FedAvg with seeded sampling, reply checks,
per-row aggregation, a server optimiser and the byte ledger.

Sampling and aggregation order depend only on the seed, the round and the
partition ids, so a run gives the same model whatever order Ray runs the
clients in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from prunus.common.broadcast import encode_broadcast
from prunus.common.config import Config
from prunus.common.params import Params, to_record, wire_bytes, wire_bytes_with_part
from prunus.common.pruning import SparseUpdate
from prunus.server.aggregation import aggregate
from prunus.server.ledger import Ledger, ReplyLog, RoundLog
from prunus.server.model_pruning import prune_model, sparsity_at
from prunus.server.optimizer import ServerOptimizer
from prunus.server.validation import ReplyError, validate_train_reply

log = logging.getLogger("prunus")

TRAIN_STREAM, EVAL_STREAM = 0, 1


class PrunusStrategy(FedAvg):
    """FedAvg family over partitions; keeps the global shared parameters."""

    def __init__(self, cfg: Config, nodes_by_partition: dict[int, int], params: Params, ledger: Ledger) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0 if cfg.federated_eval_clients else 0.0,
            min_available_nodes=len(nodes_by_partition),
        )
        self.cfg = cfg
        self.nodes_by_partition = nodes_by_partition
        self.partition_ids = sorted(nodes_by_partition)
        self.partition_of_node = {node: partition for partition, node in nodes_by_partition.items()}
        self.params = params
        self.shapes = {name: value.shape for name, value in params.items()}
        # bytes of the shared parameters as dense float32 arrays: the yardstick
        # for the dense-equivalent columns of the ledger
        self.dense_array_bytes = wire_bytes(to_record(params))
        self.ledger = ledger
        self.optimizer = ServerOptimizer(
            cfg.server_optimizer, cfg.server_lr, cfg.server_momentum, cfg.server_beta2, cfg.server_eps
        )
        self.round_started = time.perf_counter()

    def sample(self, server_round: int, count: int, stream: int) -> list[int]:
        """Node ids of `count` partitions drawn from (seed, round, stream) alone."""
        rng = np.random.default_rng([self.cfg.seed, server_round, stream])
        count = min(count, len(self.partition_ids))
        chosen = np.sort(rng.choice(len(self.partition_ids), size=count, replace=False))
        return [self.nodes_by_partition[self.partition_ids[i]] for i in chosen]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.round_started = time.perf_counter()
        node_ids = self.sample(server_round, self.cfg.clients_per_round, TRAIN_STREAM)
        entry = self.ledger.round(server_round)
        entry.clients = len(node_ids)
        return self._broadcast(server_round, node_ids, MessageType.TRAIN)

    def _broadcast(self, server_round: int, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """The global parameters (downlink codec applied) to every sampled node."""
        arrays = encode_broadcast(self.params, self.cfg)
        record = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
        sent, arrays_sent = wire_bytes_with_part(record, arrays)
        entry = self.ledger.round(server_round)
        entry.downlink_bytes += sent * len(node_ids)
        entry.dense_downlink_bytes += (sent - arrays_sent + self.dense_array_bytes) * len(node_ids)
        entry.downlink_nnz += sum(int(np.count_nonzero(v)) for v in self.params.values()) * len(node_ids)
        return self._construct_messages(record, node_ids, message_type)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        entry = self.ledger.round(server_round)
        accepted: list[tuple[int, int, SparseUpdate, float, float]] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                entry.failures += 1
                self._log_reply(server_round, "train", msg, "failed")
                log.warning("round %d: node %d failed: %s", server_round, node, msg.error.reason)
                continue
            sent = self._count_uplink(entry, msg.content)
            try:
                update, num_examples, partition = validate_train_reply(msg.content, self.shapes, self.cfg.dense_uplink)
            except ReplyError as err:
                entry.rejected += 1
                self._log_reply(server_round, "train", msg, "rejected", sent)
                log.warning("round %d: rejected reply of node %d: %s", server_round, node, err)
                continue
            nnz = sum(len(indices) for indices, _, _ in update.values())
            entry.uplink_nnz += nnz
            self._log_reply(server_round, "train", msg, "accepted", sent, nnz)
            loss = float(msg.content["metrics"].get("train-loss", float("nan")))
            accepted.append((partition, node, update, num_examples, loss))
        entry.replies = len(accepted)
        if not accepted:
            log.warning("round %d: no usable replies; global model unchanged", server_round)
            return None, None
        accepted.sort(key=lambda item: (item[0], item[1]))
        weights = [1.0 if self.cfg.row_averaging else n for _, _, _, n, _ in accepted]
        pairs = [(update, w) for (_, _, update, _, _), w in zip(accepted, weights)]
        update = aggregate(pairs, self.shapes, self.cfg.row_averaging)
        self.params = prune_model(self.optimizer.step(self.params, update), sparsity_at(self.cfg, server_round))
        examples = np.array([n for _, _, _, n, _ in accepted])
        losses = np.array([loss for *_, loss in accepted])
        entry.train_loss = float((examples * losses).sum() / examples.sum())
        metrics = MetricRecord({"train-loss": entry.train_loss, "num-examples": float(examples.sum())})
        return to_record(self.params), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self.cfg.federated_eval_clients or not self.is_eval_round(server_round):
            return []
        node_ids = self.sample(server_round, self.cfg.federated_eval_clients, EVAL_STREAM)
        return self._broadcast(server_round, node_ids, MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Example-weighted mean of the clients' metrics, summed in partition
        order so the result does not depend on reply order."""
        entry = self.ledger.round(server_round)
        rows = []
        for msg in replies:
            if msg.has_error():
                entry.failures += 1
                self._log_reply(server_round, "evaluate", msg, "failed")
                log.warning("round %d: evaluation on node %d failed: %s", server_round, msg.metadata.src_node_id, msg.error.reason)
                continue
            self._log_reply(server_round, "evaluate", msg, "accepted", self._count_uplink(entry, msg.content))
            metrics = dict(msg.content["metrics"])
            rows.append((int(msg.content["info"]["partition-id"]), metrics.pop("num-examples"), metrics))
        rows = sorted((row for row in rows if row[1] > 0), key=lambda row: row[0])
        total = sum(n for _, n, _ in rows)
        if not total:
            return None
        names = sorted(rows[0][2])
        averaged = {name: sum(n * m[name] for _, n, m in rows) / total for name in names}
        entry.metrics |= {f"fed-{k}": float(v) for k, v in averaged.items()}
        return MetricRecord({**averaged, "num-examples": total})

    def _count_uplink(self, entry: RoundLog, content: RecordDict) -> int:
        """Bytes actually received (returned), and what the same reply would cost dense."""
        arrays = content.get("arrays")
        arrays = arrays if isinstance(arrays, ArrayRecord) else None
        sent, arrays_sent = wire_bytes_with_part(content, arrays)
        entry.uplink_bytes += sent
        entry.dense_uplink_bytes += sent - arrays_sent + (self.dense_array_bytes if arrays is not None else 0)
        return sent

    def _log_reply(self, server_round: int, kind: str, msg: Message, status: str, sent: int = 0, nnz: int = 0) -> None:
        """Where a reply came from (partition, host, Ray node) for clients.csv.

        The partition comes from the discovery map, not from the reply, so a
        failed or malformed reply is still attributed to the right client.
        """
        info = msg.content.get("info") if not msg.has_error() else None
        info = info if isinstance(info, ConfigRecord) else {}
        node = msg.metadata.src_node_id
        self.ledger.replies.append(
            ReplyLog(
                round=server_round,
                kind=kind,
                partition=self.partition_of_node.get(node, -1),
                node=node,
                host=str(info.get("host", "")),
                ray_node=str(info.get("ray-node", "")),
                status=status,
                uplink_bytes=sent,
                uplink_nnz=nnz,
            )
        )

    def is_eval_round(self, server_round: int) -> bool:
        return server_round % self.cfg.eval_every == 0 or server_round == self.cfg.rounds
