"""The client half of secure aggregation (`common/secagg/`): one handler per exchange.

A client's secrets for the round (its private keys, its self-mask seed, the
sealed shares it holds) live in the state's `secagg` record between the
round's exchanges (`client.state.serve` keeps it in the state home's
scratch, never in the versioned store) and are dropped after unmasking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunus.client.handlers import (
    PRIVATE_KEY,
    RESIDUAL_KEY,
    ClientData,
    Tamper,
    local_step,
    named_rows,
    residual_params,
)
from prunus.common.compression.base import RoundContext
from prunus.common.compression.sparse import carry, residual_to_state
from prunus.common.compression.uplink.lowrank import read_basis
from prunus.common.config import Config
from prunus.common.models import model_spec
from prunus.common.params import to_record
from prunus.common.payload import ConfigMap, Content
from prunus.common.secagg import messages, protocol
from prunus.common.secagg.messages import RECORD
from prunus.common.secagg.protocol import ClientSecrets, ProtocolError, RoundSetup


def keys(cfg: Config, content: Content, state: Content, client: ClientData) -> Content:
    """Exchange 1: fresh keys for this round."""
    config = content["config"]
    clients = messages.read_clients(content)
    if client.partition_id not in clients:
        raise ProtocolError(f"partition {client.partition_id} is not among the round's clients")
    mine, public = protocol.advertise(client.partition_id)
    state[RECORD] = _kept(mine, int(config["server-round"]), clients)
    return messages.keys_reply(*public)


def shares(cfg: Config, content: Content, state: Content, client: ClientData) -> Content:
    """Exchange 2: sealed shares for each neighbour that advertised."""
    now = _restore(cfg, content, state, client)
    sealed = protocol.share_keys(now.setup, now.mine, messages.read_peers(content))
    state[RECORD] = _kept(now.mine, now.setup.server_round, now.clients)
    return Content({RECORD: messages.sealed_map(sealed)})


def train(cfg: Config, content: Content, state: Content, client: ClientData, tamper: Tamper | None = None) -> Content:
    """Exchange 3: local training from the broadcast (on the round's rows when
    the server chose them), the update put into the round's layout and masked."""
    now = _restore(cfg, content, state, client)
    setup = now.setup
    held = messages.read_sealed(content)
    plan = named_rows(content, client.split.n_items)  # the round's rows, the same for all its clients
    feedback = cfg.compression.error_feedback
    residual = residual_params(cfg, state, client) if feedback else None  # checked before any work
    step = local_step(cfg, content, state, client, setup.server_round, plan)
    if step.result is None:  # nothing to train on: a zero update (the round still needs its input)
        update = {name: np.zeros_like(value) for name, value in step.shared.items()}
    else:
        update = step.result.delta
        state[PRIVATE_KEY] = to_record(step.result.private)
    if tamper is not None:
        update = tamper(update)
    ctx = RoundContext(setup.server_round, client.partition_id, cfg.runtime.seed, cfg.local_lr_at(setup.server_round),
                       step.rows)
    corrected, kept = carry(update, residual, ctx)
    spec = model_spec(cfg.model, client.split.n_items)
    basis = read_basis(content, spec.shapes)  # the round's shared factors, if any
    layout = messages.round_layout(cfg, setup.server_round, spec, None if plan is None else plan.request, basis)
    rng = np.random.default_rng([cfg.runtime.seed, setup.server_round, client.partition_id, 3])
    values, carried = layout.encode(corrected, setup.ring, rng, carried=feedback)
    if feedback:  # what the layout did not carry goes in a later round
        state[RESIDUAL_KEY] = to_record(residual_to_state({n: corrected[n] - carried[n] for n in corrected},
                                                          ctx.lr, kept))
    masked = protocol.masked_input(setup, now.mine, held, values)
    state[RECORD] = _kept(now.mine, setup.server_round, now.clients)
    return messages.masked_reply(masked, setup.ring)


def unmask(cfg: Config, content: Content, state: Content, client: ClientData) -> Content:
    """Exchange 4: the shares the server may have; the round's secrets are then dropped."""
    now = _restore(cfg, content, state, client)
    answer = protocol.unmask(now.setup, now.mine, *messages.read_unmask_request(content))
    del state[RECORD]
    return messages.unmask_reply(answer)


def _kept(mine: ClientSecrets, server_round: int, clients: list[int]) -> ConfigMap:
    peers = sorted(mine.peers)
    held = sorted(mine.held)
    return ConfigMap({"server-round": server_round, "clients": list(clients), "c": mine.c_private,
                      "s": mine.s_private, "seed": mine.self_seed, "peer-ids": peers,
                      "peer-c": [mine.peers[p][0] for p in peers], "peer-s": [mine.peers[p][1] for p in peers],
                      "seal-keys": [mine.seal_keys[p] for p in sorted(mine.seal_keys)],
                      "held-ids": held, "held": [mine.held[p] for p in held]})


@dataclass(frozen=True)
class _Round:
    """A client's view of the round in progress."""

    mine: ClientSecrets
    setup: RoundSetup
    clients: list[int]


def _restore(cfg: Config, content: Content, state: Content, client: ClientData) -> _Round:
    """This round's secrets, and the round, from the state's record."""
    kept = state.get(RECORD)
    server_round = int(content["config"]["server-round"])
    if not isinstance(kept, ConfigMap) or kept.get("server-round") != server_round:
        raise ProtocolError(f"no secure-aggregation keys of round {server_round} (this client missed exchange 1)")
    clients = kept["clients"]
    mine = ClientSecrets(client.partition_id, kept["c"], kept["s"], kept["seed"],
                         {p: (c, s) for p, c, s in zip(kept["peer-ids"], kept["peer-c"], kept["peer-s"])},
                         dict(zip(kept["peer-ids"], kept["seal-keys"])), dict(zip(kept["held-ids"], kept["held"])))
    return _Round(mine, messages.round_setup(cfg, clients, server_round), clients)
