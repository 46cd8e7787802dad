"""Secure aggregation's messages, as prunus content, and the layout of a client's input.

Message types (a round's extra exchanges, like the row query):

* `query.secagg_keys`: server -> {"config": round, clients}; client -> {"secagg": c, s, commit};
* `query.secagg_shares`: server -> {"config", "secagg": peer ids, their c and s keys};
  client -> {"secagg": to (ids), sealed};
* `train.secure`: server -> the broadcast, and {"secagg": from (ids), sealed}, the
  shares routed to it; client -> {"masked": y} (its input, masked, as ring bytes);
* `query.secagg_unmask`: server -> {"config", "secagg": survivors, dropped};
  client -> {"secagg": ids, shares}.

A client's input is one vector of ring elements (`Layout`): its update in
the round's shared coordinates, quantised (`Ring.encode`), then one 0/1 per row of each tensor
(whether the update touched it: their sum is the row's count, for
per-row averaging), then the number of its entries the clip clipped.
Parsing checks every field's type and length and raises `ProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunus.common.compression import UPLINK, make
from prunus.common.compression.base import RowIds, SharedCoordinates, put_rows, row_shapes, take_rows
from prunus.common.config import Config
from prunus.common.models import ModelSpec
from prunus.common.params import Params, array_of, npy_array
from prunus.common.payload import Arrays, ConfigMap, Content
from prunus.common.secagg.protocol import ProtocolError, RoundSetup
from prunus.common.secagg.ring import Ring

KEYS, SHARES, UNMASK = "query.secagg_keys", "query.secagg_shares", "query.secagg_unmask"
SECURE_TRAIN = "train.secure"
RECORD = "secagg"


@dataclass(frozen=True)
class Layout:
    """Where each tensor's values and row counts sit in a client's input: the
    model's tensors, or with `rows` only those rows of the item tables (the
    round's shared rows), each put into the uplink method's shared
    coordinates (every entry, the round's random positions, or the round's
    low-rank projection): the same for every client of the round."""

    model_shapes: dict[str, tuple[int, ...]]
    coords: SharedCoordinates
    rows: RowIds | None = None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the tensors a client's input carries (before `coords`)."""
        return row_shapes(self.model_shapes, self.rows)

    @property
    def widths(self) -> dict[str, int]:
        return {name: self.coords.width(name, shape) for name, shape in self.shapes.items()}

    @property
    def values(self) -> int:
        return sum(self.widths.values())

    @property
    def row_count(self) -> int:
        return sum(shape[0] if shape else 1 for shape in self.shapes.values())

    def length(self, ring: Ring) -> int:
        """Ring elements in a client's input: values, row counts, clipped count's digits."""
        return self.values + self.row_count + ring.digit_count(self.values)

    def encode(self, update: Params, ring: Ring, rng: np.random.Generator,
               carried: bool = False) -> tuple[np.ndarray, Params | None]:
        """The client's input (quantised values, touched rows, clipped count),
        and with `carried` what of `update` it carries before quantisation
        (full size: the rest is the client's to keep, for error feedback)."""
        update = take_rows(update, self.rows)
        projected = [np.asarray(self.coords.project(n, np.asarray(update[n], np.float32)), np.float32).reshape(-1)
                     for n in self.shapes]
        levels, clipped = ring.encode(np.concatenate(projected), rng)
        touched = [np.any(np.asarray(update[n]).reshape(shape[0] if shape else 1, -1) != 0, axis=1)
                   for n, shape in self.shapes.items()]
        counts = np.concatenate(touched).astype(ring.dtype)
        vector = np.concatenate([levels, counts, ring.digits(clipped, self.values)])
        if not carried:
            return vector, None
        lifted = {n: self.coords.lift(n, p, shape).astype(np.float32) for p, (n, shape) in zip(projected, self.shapes.items())}
        return vector, put_rows(lifted, self.rows, self.model_shapes)

    def decode(self, total: np.ndarray, count: int, ring: Ring, row_averaging: bool) -> tuple[Params, int]:
        """The round's mean step (per touched row with `row_averaging`, else
        over all `count` inputs) and how many entries were clipped in all."""
        sums = ring.decode_sum(total[: self.values], count)
        counts = total[self.values: self.values + self.row_count].astype(np.float64)
        step, at, row_at = {}, 0, 0
        for (name, shape), width in zip(self.shapes.items(), self.widths.values()):
            rows = shape[0] if shape else 1
            block = self.coords.lift(name, sums[at: at + width], shape).reshape(rows, -1)
            if row_averaging:
                n = counts[row_at: row_at + rows]
                block = np.where(n[:, None] > 0, block / np.maximum(n, 1)[:, None], 0.0)
            else:
                block = block / count
            step[name] = block.reshape(shape).astype(np.float32)
            at, row_at = at + width, row_at + rows
        return put_rows(step, self.rows, self.model_shapes), ring.undigits(total[self.values + self.row_count:])


def round_layout(cfg: Config, server_round: int, spec: ModelSpec, rows: np.ndarray | None = None,
                 basis: Params | None = None) -> Layout:
    """The round's layout: the item rows the server chose for the round
    (`rows`, sent to all its clients), else every row or `secure-rows` of
    them drawn from (seed, round) alone; in the uplink method's coordinates
    of the round (with the `basis` its messages carry). None of it says
    anything of any client."""
    uplink = make(UPLINK, cfg.compression.prune_method, cfg)
    coords = uplink.coordinates(cfg.runtime.seed, server_round, basis)
    share = cfg.secure.secure_rows
    if rows is None and (share >= 1 or not spec.item_tables):
        return Layout(spec.shapes, coords)
    if rows is None:
        n_items = spec.shapes[spec.item_tables[0]][0]
        rng = np.random.default_rng([cfg.runtime.seed, server_round, 41])
        rows = np.sort(rng.choice(n_items, size=max(1, round(share * n_items)), replace=False))
    return Layout(spec.shapes, coords, dict.fromkeys(spec.item_tables, rows))


def round_setup(cfg: Config, clients: list[int], server_round: int) -> RoundSetup:
    """The round as both halves derive it from the config and the round's clients."""
    n, secure = len(clients), cfg.secure
    ring = Ring(secure.ring_bits, secure.ring_clip, max_clients=max(n, 1))
    return RoundSetup(server_round, cfg.runtime.seed, tuple(sorted(clients)), secure.degree(n), secure.threshold(n),
                      ring)


# ------------------------------------------------------------ the messages
def keys_request(server_round: int, clients: list[int]) -> Content:
    return Content({"config": ConfigMap({"server-round": server_round, "clients": list(clients)})})


def read_clients(content: Content) -> list[int]:
    config = content.get("config") if isinstance(content, Content) else None
    if not isinstance(config, ConfigMap):
        raise ProtocolError("no ConfigMap 'config'")
    return _ints(config, "clients")


def keys_reply(c_public: bytes, s_public: bytes, commit: bytes) -> Content:
    return Content({RECORD: ConfigMap({"c": c_public, "s": s_public, "commit": commit})})


def read_keys(content: Content) -> tuple[bytes, bytes, bytes]:
    record = _record(content)
    return tuple(_bytes(record, name) for name in ("c", "s", "commit"))  # type: ignore[return-value]


def shares_request(server_round: int, peers: dict[int, tuple[bytes, bytes]]) -> Content:
    ids = sorted(peers)
    return Content({"config": ConfigMap({"server-round": server_round}),
                    RECORD: ConfigMap({"ids": ids, "c": [peers[p][0] for p in ids], "s": [peers[p][1] for p in ids]})})


def read_peers(content: Content) -> dict[int, tuple[bytes, bytes]]:
    record = _record(content)
    ids, c, s = _ints(record, "ids"), _byte_list(record, "c"), _byte_list(record, "s")
    if not len(ids) == len(c) == len(s):
        raise ProtocolError("peer ids and keys of different lengths")
    return {p: (ck, sk) for p, ck, sk in zip(ids, c, s)}


def sealed_map(sealed: dict[int, bytes], ids_name: str = "ids") -> ConfigMap:
    ids = sorted(sealed)
    return ConfigMap({ids_name: ids, "sealed": [sealed[p] for p in ids]})


def read_sealed(content: Content, ids_name: str = "ids") -> dict[int, bytes]:
    record = _record(content)
    ids, sealed = _ints(record, ids_name), _byte_list(record, "sealed")
    if len(ids) != len(sealed) or len(set(ids)) != len(ids):
        raise ProtocolError("sealed shares and their ids do not pair up")
    return dict(zip(ids, sealed))


def masked_reply(masked: np.ndarray, ring: Ring) -> Content:
    return Content({"masked": Arrays({"y": npy_array(np.frombuffer(ring.to_bytes(masked), np.uint8))})})


def read_masked(content: Content, ring: Ring, length: int) -> np.ndarray:
    record = content.get("masked")
    if not isinstance(record, Arrays) or list(record) != ["y"]:
        raise ProtocolError("reply has no 'masked' holding one array 'y'")
    try:
        raw = array_of(record["y"], writable=False)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError("not 1-D uint8")
        return ring.from_bytes(raw.tobytes(), length)
    except ValueError as err:
        raise ProtocolError(f"masked input: {err}") from None


def unmask_request(server_round: int, survivors: list[int], dropped: list[int]) -> Content:
    return Content({"config": ConfigMap({"server-round": server_round}),
                    RECORD: ConfigMap({"survivors": list(survivors), "dropped": list(dropped)})})


def read_unmask_request(content: Content) -> tuple[list[int], list[int]]:
    record = _record(content)
    return _ints(record, "survivors"), _ints(record, "dropped")


def unmask_reply(shares: dict[int, bytes]) -> Content:
    ids = sorted(shares)
    return Content({RECORD: ConfigMap({"ids": ids, "shares": [shares[p] for p in ids]})})


def read_unmask_reply(content: Content) -> dict[int, bytes]:
    record = _record(content)
    ids, shares = _ints(record, "ids"), _byte_list(record, "shares")
    if len(ids) != len(shares) or len(set(ids)) != len(ids):
        raise ProtocolError("shares and their ids do not pair up")
    return dict(zip(ids, shares))


# ------------------------------------------------------------- field checks
def _record(content: Content) -> ConfigMap:
    record = content.get(RECORD) if isinstance(content, Content) else None
    if not isinstance(record, ConfigMap):
        raise ProtocolError(f"no ConfigMap {RECORD!r}")
    return record


def _bytes(record: ConfigMap, name: str) -> bytes:
    value = record.get(name)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{name!r} is not bytes")
    return value


def _byte_list(record: ConfigMap, name: str) -> list[bytes]:
    value = record.get(name)
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise ProtocolError(f"{name!r} is not a list of bytes")
    return value


def _ints(record: ConfigMap, name: str) -> list[int]:
    value = record.get(name)
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ProtocolError(f"{name!r} is not a list of ints")
    return value
