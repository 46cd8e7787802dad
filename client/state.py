"""A client's state between its messages: one interface, whichever engine keeps it.

A client's state (its private user vectors, its uplink method's residual) is
read before a message is handled and written after a training round. Where
it lives depends on the engine, behind one `StateHome`:

* `StoreHome`: a simulated ClientApp under Flower's Simulation Engine, the
  run's client-state store (`client.state_store`: files or shared memory),
  so that the state does not travel through the driver with every message;
* `MemoryHome`: the in-process engine, in memory (and in the store when the
  run checkpoints, so that a resumed run finds it);
* the Deployment Engine's node keeps it in Flower's `Context` (`client.app`).

`serve` is the one lifecycle every engine runs for a message: load what the
message's handler reads, handle, save what a training round wrote.

Besides its state a client may keep a small `Scratch` record that lives only
between the exchanges of one round (secure aggregation's keys): never in the
versioned store, where a training round's version is read from the round
before; in Flower's `Context` under Flower, in memory in process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prunus.client import state_store
from prunus.client.handlers import ClientData, message_round
from prunus.common.config import Config
from prunus.common.payload import ConfigMap, Content

Handler = Callable[[Config, Content, Content, ClientData], Content]


@dataclass(frozen=True)
class Use:
    """What a message's handler does with the state."""

    reads: tuple[str, ...] | None  # the records it reads (None: all of them)
    writes: bool = False  # whether it leaves a new state (a training round)
    needs_state: bool = True  # False: it reads nothing (a row query)
    scratch: str = ""  # the name of the round's scratch record it reads and writes ("": none)


class Scratch(Protocol):
    """A partition's scratch record between the exchanges of a round."""

    def get(self, partition: int) -> ConfigMap | None: ...

    def put(self, partition: int, record: ConfigMap | None) -> None: ...


class MemoryScratch:
    def __init__(self) -> None:
        self.records: dict[int, ConfigMap] = {}

    def get(self, partition: int) -> ConfigMap | None:
        return self.records.get(partition)

    def put(self, partition: int, record: ConfigMap | None) -> None:
        if record is None:
            self.records.pop(partition, None)
        else:
            self.records[partition] = record


class StateHome(Protocol):
    def load(self, partition: int, server_round: int, use: Use) -> Content:
        """The state a message of `server_round` starts from (a training round:
        from before it; otherwise: up to it)."""

    def save(self, partition: int, server_round: int, state: Content, n_items: int) -> None:
        """Keep the state a training round left."""

    scratch: Scratch


def serve(handler: Handler, use: Use, cfg: Config, content: Content, home: StateHome, client: ClientData) -> Content:
    """Load the state (and the round's scratch record), run `handler`, save
    the state when the handler writes it (and the scratch record)."""
    server_round = message_round(content)
    state = home.load(client.partition_id, server_round, use) if use.needs_state else Content()
    if use.scratch:
        record = home.scratch.get(client.partition_id)
        state.pop(use.scratch, None)
        if record is not None:
            state[use.scratch] = record
    reply = handler(cfg, content, state, client)
    if use.scratch:
        home.scratch.put(client.partition_id, state.pop(use.scratch, None))
    if use.writes:
        home.save(client.partition_id, server_round, state, client.split.n_items)
    return reply


class StoreHome:
    """The run's client-state store (a simulated ClientApp)."""

    def __init__(self, cfg: Config, scratch: Scratch) -> None:
        self.cfg, self.scratch = cfg, scratch

    def load(self, partition: int, server_round: int, use: Use) -> Content:
        state = Content()
        state_store.restore(self.cfg, state, partition, server_round - 1 if use.writes else server_round, use.reads)
        return state

    def save(self, partition: int, server_round: int, state: Content, n_items: int) -> None:
        state_store.persist(self.cfg, state, partition, server_round, n_items)


class MemoryHome:
    """Each partition's state in this process (the in-process engine); with
    checkpoints also in the store, which a resumed run reads first."""

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.states, self.scratch = cfg, {}, MemoryScratch()
        self.checkpoints = bool(cfg.runtime.checkpoint_every)

    def load(self, partition: int, server_round: int, use: Use) -> Content:
        state = self.states.setdefault(partition, Content())
        if self.checkpoints:  # a resumed run's client: its state from before this round
            state_store.restore(self.cfg, state, partition, server_round - 1)
        return Content(state)  # a copy: a handler that fails leaves the kept state as it was, as under Flower

    def save(self, partition: int, server_round: int, state: Content, n_items: int) -> None:
        self.states[partition] = state
        if self.checkpoints:
            state_store.persist(self.cfg, state, partition, server_round, n_items)
