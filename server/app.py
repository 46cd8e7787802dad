"""The Flower ServerApp: discovers which node holds which partition, then runs
the rounds of `server.federation` (`server.run`) over Flower's Grid.

Flower's records appear here and in `common.flower_records` only: the Grid
transport turns each message's prunus content into Flower's records on the
way out and each reply back on the way in."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from prunus.common import flower_compat
from prunus.common.config import Config, from_run_config
from prunus.common.datasets import num_partitions
from prunus.common.flower_records import from_flower, to_flower
from prunus.common.logs import route_library_logs
from prunus.common.params import wire_bytes
from prunus.common.payload import ConfigMap, Content, MessageType
from prunus.server import reply_errors
from prunus.server.checkpoint import Checkpoint
from prunus.server.ledger import Ledger
from prunus.server.run import deployment_checkpoint, run_federation
from prunus.server.transport import Outgoing, Reply

log = logging.getLogger("prunus")

NODE_WAIT_S = 120.0
DISCOVERY_TIMEOUT_S = 600.0
ENGINE_CHECKED = 32  # nodes that confirm the engine's map (and start the actors)
# Flower's in-memory LinkState scans every message in flight on each poll, so
# thousands of queries at once cost O(n^2); a few hundred at a time stay cheap.
DISCOVERY_WAVE = 256
REPLY_TIMEOUT_S = 3600.0  # the default of `round-timeout`


def make_server_app(config: Config | None = None, resume: Checkpoint | None = None) -> ServerApp:
    """A ServerApp bound to `config` (resuming `resume`), or reading Flower's run config if None."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config or from_run_config(context.run_config)
        checkpoint = resume
        if config is None:  # `flwr run`: as `prunus simulate` does, a clean run folder with Flower's logs in it
            checkpoint = deployment_checkpoint(cfg)
            route_library_logs(Path(cfg.runtime.out), verbose=False)
        ledger = Ledger()
        if cfg.runtime.reply_wait:
            flower_compat.wait_for_replies(grid)
        nodes_by_partition = discover_partitions(grid, num_partitions(cfg), ledger)
        transport = GridTransport(grid, nodes_by_partition, cfg.federation.round_timeout)
        run_federation(cfg, transport, list(nodes_by_partition), ledger, checkpoint)

    return app


class GridTransport:
    """The Flower adapter of `server.federation`: messages over the Grid. A
    message without a reply when the round timeout passes counts as failed."""

    def __init__(self, grid: Grid, nodes_by_partition: dict[int, int], timeout: float = REPLY_TIMEOUT_S) -> None:
        self.grid, self.nodes, self.timeout = grid, nodes_by_partition, timeout
        self.partition_of_node = {node: partition for partition, node in nodes_by_partition.items()}

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]:
        records: dict[int, RecordDict] = {}  # a content many messages share (the broadcast) converted once
        for m in messages:
            if id(m.content) not in records:
                records[id(m.content)] = to_flower(m.content)
        sent = [Message(records[id(m.content)], dst_node_id=self.nodes[m.partition], message_type=message_type)
                for m in messages]
        replies = [self._reply(msg) for msg in (self.grid.send_and_receive(sent, timeout=self.timeout) if sent else [])]
        answered = {reply.partition for reply in replies}
        late = f"no reply within the round timeout ({self.timeout:g} s)"
        return replies + [Reply(m.partition, self.nodes[m.partition], None, late) for m in messages
                          if m.partition not in answered]

    def _reply(self, msg: Message) -> Reply:
        # attributed by the discovery map, so a failed or malformed reply still names its client
        node = msg.metadata.src_node_id
        partition = self.partition_of_node.get(node, -1)
        if msg.has_error():
            return Reply(partition, node, None, msg.error.reason)
        try:
            return Reply(partition, node, from_flower(msg.content))
        except ValueError as err:  # a reply Flower's records would not hold: that client failed
            return Reply(partition, node, None, f"unreadable reply: {err}")


def discover_partitions(grid: Grid, expected: int, ledger: Ledger) -> dict[int, int]:
    """Partition -> node: sampling by partition is what makes runs repeatable,
    since node ids are random per run. Every node is asked, except under
    `prunus simulate`, where the engine's own map says and only the first
    `ENGINE_CHECKED` partitions' nodes are asked to confirm it (which also
    starts the client actors before the first timed round)."""
    deadline = time.monotonic() + NODE_WAIT_S
    while len(node_ids := list(grid.get_node_ids())) != expected:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the federation has {len(node_ids)} SuperNodes but the config has {expected} partitions "
                "(one per user with partition=user, else num-silos); give the federation that many "
                f"SuperNodes (flwr run: --federation-config 'num-supernodes={expected}') or change the config"
            )
        time.sleep(1.0)
    known = flower_compat.engine_partitions(set(node_ids))
    if known is not None:
        first = {p: known[p] for p in sorted(known)[:ENGINE_CHECKED]}
        if _ask_nodes(grid, list(first.values()), expected, ledger) == first:
            log.info("%d partitions from the simulation engine's node map (%d confirmed by their nodes)",
                     len(known), len(first))
            return known
        log.warning("the simulation engine's node map disagrees with its nodes; asking every node")
    nodes = _ask_nodes(grid, node_ids, expected, ledger)
    if not nodes:
        raise RuntimeError(f"no node named a partition in 0..{expected - 1}; see the warnings above")
    if len(nodes) < expected:
        log.warning("%d of %d partitions have no node; the run goes on without them", expected - len(nodes), expected)
    log.info("discovered %d partitions", len(nodes))
    return nodes


def _ask_nodes(grid: Grid, node_ids: list[int], expected: int, ledger: Ledger) -> dict[int, int]:
    """Partition -> node from the nodes' own answers, each checked; every
    message counted in round 0."""
    entry = ledger.round(0)
    replies: list[Message] = []
    for start in range(0, len(node_ids), DISCOVERY_WAVE):
        wave = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids[start : start + DISCOVERY_WAVE]]
        entry.downlink_bytes += wire_bytes(Content()) * len(wave)
        replies += grid.send_and_receive(wave, timeout=DISCOVERY_TIMEOUT_S)
        if len(node_ids) > DISCOVERY_WAVE:
            print(f"[prunus] discovering partitions: {len(replies)}/{len(node_ids)} nodes", flush=True)
    entry.dense_downlink_bytes = entry.downlink_bytes
    nodes: dict[int, int] = {}
    failed: list[tuple[int, str]] = []
    rejected: list[tuple[int, str]] = []  # each node left out of the run, with why
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            failed.append((node, reply.error.reason))
            continue
        try:
            content = from_flower(reply.content)
        except ValueError as err:
            rejected.append((node, f"unreadable reply: {err}"))
            continue
        entry.uplink_bytes += wire_bytes(content)
        entry.dense_uplink_bytes = entry.uplink_bytes
        try:
            partition = _claimed_partition(content, expected, nodes)
        except ValueError as err:
            rejected.append((node, f"bad partition-id: {err}"))
            continue
        nodes[partition] = node
    entry.failures += len(failed)
    entry.rejected += len(rejected)
    reply_errors.report(0, "discovery", "failed", failed, unit="node")  # one console line per kind of failure
    reply_errors.report(0, "discovery", "rejected", rejected, unit="node")
    return nodes


def _claimed_partition(content: Content, expected: int, known: dict[int, int]) -> int:
    """The partition a discovery reply names: an int in [0, expected), not
    named before (the first node to name it keeps it); else ValueError."""
    info = content.get("info")
    value = info.get("partition-id") if isinstance(info, ConfigMap) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"partition-id must be an int, got {value!r}"[:200])
    if not 0 <= value < expected:
        raise ValueError(f"partition-id {value} is not in 0..{expected - 1}")
    if value in known:
        raise ValueError(f"partition {value} is already held by node {known[value]}")
    return value


app = make_server_app()
