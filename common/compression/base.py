"""The two protocols every compression method implements, and what they exchange.

An uplink method has a client half (`encode`: the update and the client's
compression state -> the reply's payload, the new state, stats) and a server
half (`decode`: the payload -> a checked `Update`, or `PayloadError`). A
downlink method has a server half (`encode` the global model) and a client half
(`decode` the broadcast). Both halves live in one class, so they cannot drift.
A method is given the shared `compression` section (`CompressionConfig`) and,
where it has settings only it reads, its own: a config section (`@section`
dataclass of `common.config`) declared beside it as its class's `Options`,
handed to `__init__` as `options` (`compression.make` builds a method so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from prunus.common.payload import Arrays
from prunus.common.update import Update

if TYPE_CHECKING:
    from prunus.common.config import CompressionConfig

Params = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]
# the Flower message type of a row query ("query" category, "rows" action);
# its content's config names the server round and the purpose ("train" or
# "evaluate") of the message that follows; the reply carries a row set
ROW_QUERY = "query.rows"


class PayloadError(ValueError):
    """A payload that does not decode into an update of the model; says why.

    The one error a server half raises: the server rejects the reply with
    this message and the round goes on.
    """


@dataclass(frozen=True)
class RoundContext:
    """What a client's encoder may depend on besides the update itself."""

    server_round: int
    partition_id: int
    seed: int
    # the round's local learning rate: error feedback keeps its residual per
    # unit of it (a returning client's leftover must not land at an old rate)
    lr: float = 1.0
    # the item rows the update may touch (a partial broadcast's rows; None: all):
    # error feedback holds back what it carries for other rows until they are sent
    rows: dict[str, np.ndarray] | None = None
    # the round's shared factors its training messages carry (`lowrank`'s rank-basis = "model"; None: none)
    basis: dict[str, np.ndarray] | None = None
    # the global model as the round's messages carried it, decoded, full size
    # (a client: zero in rows it was not sent); only for an uplink that
    # `reads_model` (`lowrank`'s row scales), else None
    model: dict[str, np.ndarray] | None = None
    # what the server cannot know: a client passes its secret
    # (`ClientData.secret`), the server and the tests may leave it 0
    secret: int = 0

    def private_rng(self, stream: int) -> np.random.Generator:
        """Draws that hide something from the server (a request's pool and
        padding, decoys, noise). Seeded by the client's secret as well as by
        (seed, round, partition), which the server knows too: from those
        alone it could draw them again and take them out."""
        return np.random.default_rng([self.secret, self.seed, self.server_round, self.partition_id, stream])


RowIds = dict[str, np.ndarray]  # item-table name -> sorted row ids


@dataclass(frozen=True)
class BroadcastContext:
    """What a downlink encoder may depend on besides the model."""

    server_round: int
    seed: int
    # the item rows this message carries, per item table (None: every row);
    # they travel in this order and without their ids (the client knows them)
    rows: RowIds | None = None


def take_rows(params: Params, rows: RowIds | None) -> Params:
    """The tensors a message carries: the listed rows of the item tables, the rest whole."""
    if rows is None:
        return params
    return {name: value[rows[name]] if name in rows else value for name, value in params.items()}


def row_shapes(shapes: Shapes, rows: RowIds | None) -> Shapes:
    """The shapes of `take_rows`' tensors."""
    if rows is None:
        return shapes
    return {name: (len(rows[name]), *shape[1:]) if name in rows else shape for name, shape in shapes.items()}


def rows_outside(n_rows: int, ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of an `n_rows`-row table that are not in `ids`."""
    outside = np.ones(n_rows, dtype=bool)
    outside[ids] = False
    return outside


def put_rows(blocks: Params, rows: RowIds | None, shapes: Shapes) -> Params:
    """Full-size tensors from `take_rows`' tensors, zero in the rows not carried."""
    if rows is None:
        return blocks
    full = {}
    for name, value in blocks.items():
        if name in rows:
            full[name] = np.zeros(shapes[name], dtype=value.dtype)
            full[name][rows[name]] = value
        else:
            full[name] = value
    return full


@dataclass(frozen=True)
class Encoded:
    """The client half's result."""

    record: Arrays  # the reply's payload
    state: dict[str, np.ndarray] = field(default_factory=dict)  # kept in the client's state (never sent)
    nnz: int = 0  # numbers sent
    density: float = 1.0  # the round's target density


class UplinkMethod(Protocol):
    """Client update -> payload (client half); payload -> `Update` (server half)."""

    name: ClassVar[str]
    # its own config section, where it has settings only it reads (then
    # `__init__` takes it as `options`); None: the shared section only
    Options: ClassVar[type | None] = None

    def __init__(self, settings: CompressionConfig) -> None: ...

    def encode(self, update: Params, state: dict[str, np.ndarray] | None, ctx: RoundContext) -> Encoded:
        """`state`: what the client's previous `Encoded.state` left, read-only
        (views of the stored bytes); None before the first."""

    def round_basis(self, params: Params, seed: int, server_round: int) -> Params | None:
        """What the round's training messages carry so that every client
        encodes alike beyond the seed and round (None: nothing; `lowrank`)."""

    def decode(self, record: Arrays, shapes: Shapes, ctx: RoundContext | None = None) -> Update:
        """`ctx`: the round (and partition) the reply answers; a method whose
        payload leaves out what both sides derive from it (a shared random
        factor) needs it, the server always passes it."""


class SharedCoordinates(Protocol):
    """Where every client of a round puts its update, the same for all of them
    (derived from the seed and round alone): what secure aggregation adds.

    An uplink method that composes with secure aggregation gives one per round
    (`coordinates(seed, server_round)`); `project` is the client half, `lift`
    the server half, and both are linear, so the lift of a sum of projections
    is the sum of the clients' lifted updates.
    """

    def width(self, name: str, shape: tuple[int, ...]) -> int:
        """How many values tensor `name` of `shape` takes."""

    def project(self, name: str, value: np.ndarray) -> np.ndarray:
        """The tensor's `width` values (1-D)."""

    def lift(self, name: str, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor of `shape` from `width` values (zero where nothing was sent)."""


@dataclass(frozen=True)
class RowPlan:
    """A client's item rows for one message."""

    request: np.ndarray  # sorted unique item ids it asks the server for
    negatives: np.ndarray  # the ids its sampled negatives are drawn from (within `request`)


class RowSelection(Protocol):
    """Which item rows a message carries: every row, the rows a client asks
    for (a query before the message), or rows the server picks.

    Client half: `plan` -> the rows to ask for and the negatives' pool, or
    None when the client does not choose (it then trains on what it gets).
    Server half: `rows` -> the ids to send a client, given what it asked
    (None: every row); rows the client did not ask for travel with their ids.
    """

    name: ClassVar[str]
    queries: ClassVar[bool]  # whether each message is preceded by a row query
    Options: ClassVar[type | None] = None  # its own config section (see UplinkMethod)

    def __init__(self, settings: CompressionConfig) -> None: ...

    def plan(self, needed: np.ndarray, n_items: int, ctx: RoundContext) -> RowPlan | None: ...

    def rows(self, server_round: int, request: np.ndarray | None, n_items: int, purpose: str,
             seed: int) -> np.ndarray | None: ...

    def observe(self, server_round: int, step: Params, item_tables: tuple[str, ...]) -> None:
        """The round's aggregated update, for a selection that learns from it
        (subclasses that do not may leave this as it is)."""

    def state(self) -> Params:
        """What a checkpoint keeps of the selection (a learnt posterior)."""
        return {}

    def restore(self, state: Params) -> None:
        """Take up `state()` from a checkpoint."""


class Defence(Protocol):
    """What a client does to its update before the uplink method sees it, so
    that the reply reveals less (decoy rows, noise); its byte cost shows in
    the uplink bytes it adds."""

    name: ClassVar[str]
    needs_scores: bool = False  # whether `apply` reads `scores` (computed for it only then)
    repays: bool = False  # whether what `apply` adds is owed back through the error-feedback residual
    Options: ClassVar[type | None] = None  # its own config section (see UplinkMethod)

    def __init__(self, settings: CompressionConfig) -> None: ...

    def apply(self, delta: Params, positives: np.ndarray, item_tables: tuple[str, ...], ctx: RoundContext,
              scores: np.ndarray | None = None) -> Params:
        """`positives`: the client's items this round; `ctx.rows`: the rows it was
        sent (None: all), the only ones the result may touch; `scores`: how
        much the client's model likes each item, where it can tell (MF)."""
        ...


class DownlinkMethod(Protocol):
    """Global model -> broadcast payload (server half); payload -> arrays (client half).

    `encode` sends `take_rows(params, ctx.rows)` of a finite model, clipping
    what lies beyond `limit` (the largest magnitude the method carries; the
    server counts the entries clipped), so every finite model travels;
    `decode` gets the shapes of what was sent (`row_shapes`) and returns those
    tensors; it raises PayloadError and nothing else. `lossy`: whether what a
    client decodes may differ from the model (central evaluation then scores
    the decoded model too, `server.evaluation`).
    """

    name: ClassVar[str]
    Options: ClassVar[type | None] = None  # its own config section (see UplinkMethod)
    limit: float
    lossy: bool

    def __init__(self, settings: CompressionConfig) -> None: ...

    def encode(self, params: Params, ctx: BroadcastContext) -> Arrays: ...

    def decode(self, record: Arrays, shapes: Shapes) -> Params: ...
