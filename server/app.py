"""The Flower ServerApp: discovers which node holds which partition, then runs
the rounds of `server.federation` over Flower's Grid and writes the outputs."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from prunus.common import flower_compat
from prunus.common.config import Config, from_run_config
from prunus.common.data import SplitData
from prunus.common.datasets import load_split, num_partitions
from prunus.common.datasets import partitions as all_partitions
from prunus.common.logs import route_library_logs
from prunus.common.models import ModelSpec, build_model, model_spec
from prunus.common.params import wire_bytes
from prunus.common.privacy import epsilon, noise_multiplier
from prunus.common.results import clear_run_files, code_version, write_clients, write_rounds, write_run
from prunus.server.evaluation import CentralEvaluator
from prunus.server.ledger import REPLY_COLUMNS, Ledger, RoundLog
from prunus.server.checkpoint import Checkpoint, check_resumable
from prunus.server.checkpoint import load as load_checkpoint
from prunus.server.checkpoint import save as save_checkpoint
from prunus.server.federation import Federation, Outgoing, Reply, Transport
from prunus.server.leakage import LeakageMeter
from prunus.server.model_store import save_model
from prunus.server.progress import RoundProgress

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


def deployment_checkpoint(cfg: Config) -> Checkpoint | None:
    """Under `flwr run`: with `resume = true` the checkpoint in `out` (made under
    the same config, key by key), else None after clearing `out` of an earlier
    run's files. Clients keep their own state in their SuperNodes."""
    out = Path(cfg.runtime.out)
    if not cfg.runtime.resume:
        clear_run_files(out)
        return None
    checkpoint = load_checkpoint(out)
    check_resumable(cfg, checkpoint)
    return checkpoint


class GridTransport:
    """The Flower adapter of `server.federation`: messages over the Grid. A
    message without a reply when the round timeout passes counts as failed."""

    def __init__(self, grid: Grid, nodes_by_partition: dict[int, int], timeout: float = REPLY_TIMEOUT_S) -> None:
        self.grid, self.nodes, self.timeout = grid, nodes_by_partition, timeout
        self.partition_of_node = {node: partition for partition, node in nodes_by_partition.items()}

    def exchange(self, message_type: str, messages: list[Outgoing]) -> list[Reply]:
        sent = [Message(m.content, dst_node_id=self.nodes[m.partition], message_type=message_type) for m in messages]
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
        return Reply(partition, node, msg.content)


def run_federation(cfg: Config, transport: Transport, partitions: list[int], ledger: Ledger,
                   resume: Checkpoint | None = None) -> dict:
    """Train for `rounds` rounds over `transport` (after `resume`'s round, when
    given); write summary.json, rounds.csv, clients.csv, curve.png, model.npz,
    and checkpoint.npz every `checkpoint-every` rounds."""
    started = time.perf_counter()
    code_version()  # the code this run runs, before anything can change it
    out = Path(cfg.runtime.out)
    split = load_split(cfg)
    m = cfg.model
    model = build_model(m.model, 1, split.n_items, m.dim, m.mlp_widths, seed=cfg.runtime.seed)
    params = {k: v.numpy() for k, v in model.shared_state().items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    evaluator = CentralEvaluator(cfg, split, device)
    spec = model_spec(cfg.model, split.n_items)
    federation = Federation(cfg, partitions, params, spec, evaluator, ledger, leakage_meter(cfg, split, spec))

    if resume is not None:
        federation.restore(resume)
        log.info("resuming after round %d", resume.server_round)
    progress = RoundProgress(cfg.federation.rounds)
    every = cfg.runtime.checkpoint_every

    def on_round(entry: RoundLog) -> None:
        progress.update(entry)
        write_rounds(out, ledger.rows())
        if every and entry.round and (entry.round % every == 0 or entry.round == cfg.federation.rounds):
            save_checkpoint(out, federation.snapshot(entry.round))

    try:
        final = federation.run(transport, on_round, start=1 if resume is None else resume.server_round + 1)
    finally:
        progress.close()
    saved = save_model(out, final, model.prunable_names())
    return finish(cfg, ledger, saved, time.perf_counter() - started)


def ldp_guarantee(cfg: Config, ledger: Ledger) -> dict[str, float]:
    """The run's local-DP guarantee: per reply, and composed over the train
    replies of its most-sampled client (`common.privacy`)."""
    c = cfg.compression
    if c.defence != "ldp":
        return {}
    sigma = noise_multiplier(c.ldp_epsilon, c.ldp_delta)
    releases = Counter(r.partition for r in ledger.replies if r.kind == "train" and r.status != "failed")
    most = max(releases.values(), default=0)
    return {"ldp-noise-multiplier": sigma, "ldp-epsilon-reply": c.ldp_epsilon, "ldp-delta": c.ldp_delta,
            "ldp-replies-max": most, "ldp-epsilon-run": epsilon(sigma, most, c.ldp_delta)}


def leakage_meter(cfg: Config, split: SplitData, spec: ModelSpec) -> LeakageMeter | None:
    """The attacks of `server.leakage`, when `leakage-sample` asks for them;
    the partitions' true items are read from the split for scoring only."""
    if not cfg.evaluation.leakage_sample:
        return None
    items_of = {p: np.unique(split.train_items[split.rows_of(np.asarray(users))])
                for p, users in enumerate(all_partitions(cfg))}
    width = spec.shapes[spec.item_tables[0]][1]
    return LeakageMeter(cfg.evaluation.leakage_sample, cfg.runtime.seed, items_of, spec.item_tables, width)


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
        entry.downlink_bytes += sum(wire_bytes(q.content) for q in wave)
        replies += grid.send_and_receive(wave, timeout=DISCOVERY_TIMEOUT_S)
        if len(node_ids) > DISCOVERY_WAVE:
            print(f"[prunus] discovering partitions: {len(replies)}/{len(node_ids)} nodes", flush=True)
    entry.dense_downlink_bytes = entry.downlink_bytes
    nodes: dict[int, int] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            entry.failures += 1
            log.warning("node %d failed discovery, left out of the run: %s", node, reply.error.reason)
            continue
        entry.uplink_bytes += wire_bytes(reply.content)
        entry.dense_uplink_bytes = entry.uplink_bytes
        try:
            partition = _claimed_partition(reply.content, expected, nodes)
        except ValueError as err:
            entry.rejected += 1
            log.warning("node %d left out of the run: %s", node, err)
            continue
        nodes[partition] = node
    return nodes


def _claimed_partition(content: RecordDict, expected: int, known: dict[int, int]) -> int:
    """The partition a discovery reply names: an int in [0, expected), not
    named before (the first node to name it keeps it); else ValueError."""
    info = content.get("info")
    value = info.get("partition-id") if isinstance(info, ConfigRecord) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"partition-id must be an int, got {value!r}"[:200])
    if not 0 <= value < expected:
        raise ValueError(f"partition-id {value} is not in 0..{expected - 1}")
    if value in known:
        raise ValueError(f"partition {value} is already held by node {known[value]}")
    return value


def finish(cfg: Config, ledger: Ledger, model: dict, wall_seconds: float) -> dict:
    """Write the outputs (clients.csv too) and print the final table."""
    out = Path(cfg.runtime.out)
    rows = ledger.rows()
    write_clients(out, ledger.reply_rows(), REPLY_COLUMNS)
    facts = {
        "comm": ledger.comm_summary(),
        "model": model,
        "rounds": cfg.federation.rounds,
        "clients": sum(r["clients"] for r in rows),
        "failures": sum(r["failures"] for r in rows),
        "rejected": sum(r["rejected"] for r in rows),
        "wall_seconds": wall_seconds,
        "placement": ledger.placement(),
    }
    if cfg.evaluation.leakage_sample or cfg.compression.defence == "ldp":
        facts["privacy"] = ledger.privacy_summary() | ldp_guarantee(cfg, ledger)
    return write_run(out, "federated", rows, cfg.evaluation.top_k, facts, cfg.to_dict())


app = make_server_app()
