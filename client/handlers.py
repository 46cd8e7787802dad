"""What a client does with a message, free of Flower's runtime.

`train` and `evaluate` take the message content and the client's state (both
Flower records, the wire format) and return the reply content; with a
partial broadcast (`broadcast-rows`) each is preceded by `request_rows`, the
client's answer to the server's row query. The ClientApp
(`client.app`) calls them from Flower; the in-process engine
(`simulations.inprocess`) calls them directly, so both run the same client.
The state holds the private user vectors and the uplink method's state (the
error-feedback residual); neither is ever put in a reply. A message a client
cannot use (no round, an undecodable broadcast, rows or basis) raises
`PayloadError` and nothing else, before any work is done on it (`receive`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from prunus.client.local_update import LocalData, LocalResult, local_data, local_model, local_update
from prunus.client.state_check import checked_private, checked_residual
from prunus.common.codec import CodecError, record_payload
from prunus.common.codec_rows import decode_row_set, encode_row_set
from prunus.common.compression import DEFENCES, DOWNLINK, ROWS, UPLINK, PayloadError, RoundContext, RowPlan, make
from prunus.common.compression.base import RowIds, put_rows, row_shapes, rows_outside
from prunus.common.compression.sparse import owe
from prunus.common.compression.uplink.lowrank import read_basis
from prunus.common.config import Config
from prunus.common.data import SplitData
from prunus.common.evaluation import ranking_metrics
from prunus.common.models import model_spec, private_rows
from prunus.common.params import Params, npy_array, to_record
from prunus.common.payload import Arrays, Content, MetricMap
from prunus.common.training import client_settings, fold_in, seeded_generator

PRIVATE_KEY = "private"
RESIDUAL_KEY = "residual"
READ_ONLY_STATE = (PRIVATE_KEY,)  # what the handlers that do not write the state read of it


@dataclass(frozen=True)
class ClientData:
    """One partition's data, where it trains."""

    partition_id: int
    split: SplitData
    data: LocalData
    device: torch.device

    @classmethod
    def of(cls, partition_id: int, split: SplitData, users: np.ndarray, device: torch.device) -> ClientData:
        return cls(partition_id, split, local_data(split, users), device)

    @functools.cached_property
    def secret(self) -> int:
        """A seed the server cannot know: a digest of this client's training
        data (`RoundContext.private_rng`). Repeating a draw it seeds needs the
        items the draw hides."""
        digest = hashlib.sha256(b"prunus client secret")
        for part in (self.data.users, self.data.local_users, self.data.items):
            digest.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
        return int.from_bytes(digest.digest()[:16], "little")


PURPOSES = ("train", "evaluate")  # what a row query may ask rows for
MAX_ROUND = 2**32  # rounds a message may name: [1, MAX_ROUND) (round 0 is the server's initial evaluation)


def message_round(content: Content) -> int:
    """The server round a message names in its config. PayloadError unless it
    names one: a client reads it first, and a missing or ill-typed round must
    be that message's error, not a KeyError (or a negative seed) in its work."""
    config = content.get("config") if isinstance(content, dict) else None
    value = config.get("server-round") if isinstance(config, dict) else None
    if type(value) is not int or not 1 <= value < MAX_ROUND:
        raise PayloadError(f"the message's config names no server round (an int in [1, 2^32)), got {value!r}")
    return value


def needed_rows(client: ClientData, purpose: str) -> np.ndarray:
    """The item rows a message's work cannot do without: the positives, and
    for evaluation also the held-out candidates."""
    needed = np.unique(client.data.items)
    if purpose == "evaluate":
        users, split = client.data.users, client.split
        candidates = np.concatenate([split.test_items[users], split.test_negatives[users].ravel()])
        needed = np.union1d(needed, candidates[candidates >= 0])
    return needed.astype(np.int64)


def row_plan(cfg: Config, purpose: str, server_round: int, client: ClientData) -> RowPlan | None:
    ctx = RoundContext(server_round, client.partition_id, cfg.runtime.seed, secret=client.secret)
    selection = make(ROWS, cfg.compression.broadcast_rows, cfg)
    return selection.plan(needed_rows(client, purpose), client.split.n_items, ctx)


def named_rows(content: Content, n_items: int) -> RowPlan | None:
    """The rows a message names (a selection the server makes): the client
    trains on its positives among them and draws its negatives from them."""
    if "rows" not in content:
        return None
    record = content["rows"]
    try:
        if not isinstance(record, Arrays) or list(record) != ["ids"]:
            raise CodecError("'rows' must be an Arrays holding one array 'ids'")
        ids = decode_row_set(record_payload("ids", record["ids"]), n_items)
    except CodecError as err:
        raise PayloadError(f"the message's row set: {err}") from None
    return RowPlan(ids, ids)


def _item_tables(cfg: Config, client: ClientData) -> tuple[str, ...]:
    return model_spec(cfg.model, client.split.n_items).item_tables


def _item_rows(cfg: Config, plan: RowPlan | None, client: ClientData) -> RowIds | None:
    if plan is None:
        return None
    return dict.fromkeys(_item_tables(cfg, client), plan.request)


def request_rows(cfg: Config, content: Content, state: Content, client: ClientData) -> Content:
    """The answer to a row query: the rows this client's next message needs."""
    server_round = message_round(content)
    purpose = content["config"].get("purpose")
    if purpose not in PURPOSES:
        raise PayloadError(f"a row query's purpose must be one of {PURPOSES}, got {purpose!r}")
    plan = row_plan(cfg, purpose, server_round, client)
    if plan is None:
        raise ValueError(f"broadcast-rows {cfg.compression.broadcast_rows!r} does not query clients")
    ids = np.frombuffer(encode_row_set(plan.request, client.split.n_items), dtype=np.uint8)
    return Content({"rows": Arrays({"ids": npy_array(ids)})})


def global_params(cfg: Config, content: Content, client: ClientData, rows: RowIds | None) -> Params:
    """The broadcast decoded, full size (zero in rows not sent)."""
    arrays = content.get("arrays")
    if not isinstance(arrays, Arrays):
        raise PayloadError("the message has no Arrays 'arrays' (the broadcast)")
    downlink = make(DOWNLINK, cfg.compression.downlink_codec, cfg)
    shapes = model_spec(cfg.model, client.split.n_items).shapes
    return put_rows(downlink.decode(arrays, row_shapes(shapes, rows)), rows, shapes)


@dataclass(frozen=True)
class Received:
    """A training or evaluation message as the client reads it, every part
    checked before any work is done on it."""

    server_round: int
    plan: RowPlan | None  # the rows it carries, and the negatives' pool (None: every row)
    rows: RowIds | None  # the same rows per item table
    shared: Params  # the broadcast decoded, full size (zero in rows not sent)
    basis: Params | None  # the round's shared factors (`lowrank`'s model basis; training messages only)


def receive(cfg: Config, content: Content, client: ClientData, purpose: str) -> Received:
    """Read a message of `purpose`: its round, its rows (the client's own plan,
    or for training the rows the server names), the broadcast and the
    factors. PayloadError, and nothing else, for a message it cannot use."""
    server_round = message_round(content)
    plan = row_plan(cfg, purpose, server_round, client)
    if plan is None and purpose == "train":
        plan = named_rows(content, client.split.n_items)
    rows = _item_rows(cfg, plan, client)
    basis = read_basis(content, model_spec(cfg.model, client.split.n_items).shapes) if purpose == "train" else None
    return Received(server_round, plan, rows, global_params(cfg, content, client, rows), basis)


def private_params(cfg: Config, state: Content, client: ClientData) -> Params | None:
    """The state's user vectors (None: a client's first message), checked (`client.state_check`)."""
    if PRIVATE_KEY not in state:
        return None
    return checked_private(state[PRIVATE_KEY], private_rows(cfg.model, client.split.n_items), len(client.data.users))


def residual_params(cfg: Config, state: Content, client: ClientData) -> Params | None:
    """The state's error-feedback residual (None: none kept), checked (`client.state_check`)."""
    if RESIDUAL_KEY not in state:
        return None
    return checked_residual(state[RESIDUAL_KEY], model_spec(cfg.model, client.split.n_items).shapes)


Tamper = Callable[[Params], Params]


@dataclass(frozen=True)
class LocalStep:
    """A training message's local work: the rows it was sent, the data among
    them, the decoded broadcast, and the local update (None: no examples
    among the rows sent), whose delta touches only the rows sent."""

    rows: RowIds | None
    data: LocalData
    shared: Params
    result: LocalResult | None


def local_step(cfg: Config, message: Received, state: Content, client: ClientData) -> LocalStep:
    """Train from the broadcast on the rows it carries."""
    rows, plan, shared = message.rows, message.plan, message.shared
    data = client.data if plan is None else client.data.only(plan.request)
    if not data.num_examples:
        return LocalStep(rows, data, shared, None)
    result = local_update(cfg, data, client.split.n_items, shared, private_params(cfg, state, client),
                          message.server_round, client.partition_id, client.device,
                          None if plan is None else plan.negatives)
    _only_rows(result.delta, rows)
    return LocalStep(rows, data, shared, result)


def train(cfg: Config, content: Content, state: Content, client: ClientData, tamper: Tamper | None = None) -> Content:
    """Local training from the broadcast, then the uplink method's payload.
    `tamper`: what a wrapper (`client.faults.mod`) does to the update before
    the uplink method sees it."""
    message = receive(cfg, content, client, "train")  # the message read whole before any work on it
    server_round = message.server_round
    residual = residual_params(cfg, state, client)  # checked before any work is spent on this message
    step = local_step(cfg, message, state, client)
    rows, shared, result = step.rows, step.shared, step.result
    uplink = make(UPLINK, cfg.compression.prune_method, cfg)
    ctx = RoundContext(server_round, client.partition_id, cfg.runtime.seed, cfg.local_lr_at(server_round), rows,
                       message.basis, shared if uplink.reads_model else None, client.secret)
    if result is None:  # none of its items among the rows sent: an empty update, state kept
        encoded = uplink.encode({k: np.zeros_like(v) for k, v in shared.items()}, None, ctx)
        return Content({"arrays": encoded.record, "metrics": MetricMap({"num-examples": 0, "nnz": 0})})
    defence = make(DEFENCES, cfg.compression.defence, cfg)
    undefended = result.delta
    delta = defence.apply(undefended, np.unique(step.data.items), tuple(rows or _item_tables(cfg, client)),
                          ctx, _scores(shared, result) if defence.needs_scores else None)
    added = {name: delta[name] - undefended[name] for name in delta} if defence.repays else {}
    if tamper is not None:
        delta = tamper(delta)
    encoded = uplink.encode(delta, residual, ctx)
    state[PRIVATE_KEY] = to_record(result.private)
    kept = owe(encoded.state, added, ctx.lr) if added else encoded.state
    if kept:
        state[RESIDUAL_KEY] = to_record(kept)
    metrics = MetricMap({"num-examples": result.num_examples, "train-loss": result.loss,
                            "nnz": encoded.nnz, "density": encoded.density})
    return Content({"arrays": encoded.record, "metrics": metrics})


def evaluate(cfg: Config, content: Content, state: Content, client: ClientData) -> Content:
    """Federated evaluation: rank each local user's held-out item."""
    message = receive(cfg, content, client, "evaluate")
    server_round, plan = message.server_round, message.plan
    data = client.data
    model = local_model(cfg, len(data.users), client.split.n_items, client.partition_id, client.device,
                        message.shared, private_params(cfg, state, client))
    generator = seeded_generator(cfg.runtime.seed, server_round, client.partition_id, 1)
    t = cfg.training
    settings = dataclasses.replace(client_settings(cfg), negative_pool=None if plan is None else plan.negatives)
    fold_in(model, *data.tensors(client.device), settings, t.user_refit_epochs, t.user_lr, generator)
    metrics = ranking_metrics(model, client.split, k=cfg.evaluation.top_k, users=data.users)
    n_eval = int(metrics.pop("eval-users"))
    return Content({"metrics": MetricMap({**metrics, "num-examples": n_eval})})


def _scores(shared: Params, result: LocalResult) -> np.ndarray | None:
    """MF's score of every item for the client's users (mean user vector), or
    None for a model whose scores a table product does not give."""
    users = result.private.get("user_embedding.weight")
    if users is None or "item_embedding.weight" not in shared:
        return None
    return shared["item_embedding.weight"] @ users.mean(axis=0) + shared["item_bias.weight"][:, 0]


def _only_rows(delta: Params, rows: RowIds | None) -> Params:
    """The update with every row the client was not sent set to zero: it may
    not move a row it never saw (a no-op for MF, whose step touches only its
    positives and pool; a guarantee for any other local trainer)."""
    if rows is None:
        return delta
    for name, ids in rows.items():
        delta[name][rows_outside(len(delta[name]), ids)] = 0.0
    return delta
