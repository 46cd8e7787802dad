"""Fuzz every channel a message crosses, with mutated honest messages.

A channel is one kind of message, read by one side:

* `uplink/<method>`, one per registered uplink method (`UPLINK`: a method
  added later is fuzzed with no edit here): the server reading training
  replies; the cases cycle through the value codecs, a partial broadcast
  (the rows each client asked for) and the method's own variants (lowrank's
  model basis);
* `rows`: the server reading row requests (`broadcast-rows = "requested"`,
  before training and evaluation messages);
* `evaluate`: the server reading federated-evaluation replies;
* `broadcast/<codec>`, one per registered downlink codec (`DOWNLINK`): a
  client reading training and evaluation messages (the whole model, the
  rows it asked for, a pruned model);
* `named-rows`: a client reading the rows a bandit round names;
* `basis`: a client reading lowrank's model basis (`rank-basis = "model"`);
* `row-query`: a client reading the server's row query;
* `secure/<layout>`: secure aggregation's four exchanges (keys, sealed
  shares, masked input, unmask answer), one client's message mutated, in
  each layout a secure round has: every coordinate (`none`), shared random-k,
  lowrank with the model basis, and the rows a bandit round names.

Honest messages come from the real halves: the in-process engine's clients
and the server's broadcaster, on a synthetic catalogue of ML-100K's size
(1,682 items, d=32; secure rounds: 6 clients, 40 items, d=4). One message
per case is mutated: bit flips, truncation and extension, splicing with
another message, npy header mutations (one-char dtypes such as '|u0' and
'<f3', shapes, versions, lengths, a claim of 10^12 entries), zip archives,
arrays of the wrong dtype or of floats where bytes belong, lying or
ill-typed array fields, renamed, swapped, dropped or extra arrays, records
of the wrong kind, non-finite, huge or ill-typed metrics and configs, too
many metrics, records or too large a record beside the payload, and for
secure rounds wrong field types and lengths, duplicate ids, zero keys and
replays. The message then goes through the real path: the server's round
(`Federation`: byte count, intake, validation, decoding, aggregation, the
optimiser step, the finite check) or the client's handler
(`client.dispatch.answer`, as the ClientApp calls it).

A case ends one way: accepted; rejected with the documented error (the
server logs the reply `rejected` for its `ReplyError`, a client raises
`PayloadError`); abandoned (a secure round left too short to recover its
sum); or anything else, `unexpected`: a bug. After an accepted case the
model must be finite (the server's model, the model a client decoded).
Worst time and peak memory (tracemalloc) are the reading side's: a server
round's time and memory in its clients is left out. Secure rounds also list
the errors of clients that failed on what the mutated message did to the
round (`client_errors`; documented: ProtocolError, PayloadError, RoundAbandoned).

    python benchmarks/fuzz_replies.py --cases 10000 --jobs 2   # every channel; writes benchmarks/results/fuzz_replies.json

(`--jobs`: channels run side by side, each in its own process; a channel's
cases depend only on the seed and its name, so the figures do not change.)
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import logging
import multiprocessing
import os
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one case at a time: BLAS threads
    os.environ.setdefault(_threads, "1")  # only contend (a model basis's SVD: 2 ms on one, 0.5 s on two busy cores)

import numpy as np  # noqa: E402 - after the thread settings

from prunus.client import dispatch
from prunus.client.handlers import ClientData, receive
from prunus.common.compression import DOWNLINK, UPLINK, VALUES, PayloadError
from prunus.common.compression.base import ROW_QUERY
from prunus.common.config import Config
from prunus.common.models import model_spec
from prunus.common.params import array_of, npy_array
from prunus.common.payload import Arrays, ConfigMap, Content, MessageType, MetricMap, NpyArray
from prunus.common.results import code_version
from prunus.common.secagg import messages as secagg
from prunus.server.broadcast import row_query
from prunus.server.federation import TRAIN_STREAM, Federation
from prunus.server.ledger import Ledger
from prunus.server.transport import Reply
from prunus.simulations.inprocess import InProcessTransport

CATALOGUE = {"synthetic_users": 60, "synthetic_items": 1682, "dim": 32, "eval_negatives": 20, "rounds": 1,
             "eval_every": 1, "clients_per_round": 2, "federated_eval_clients": 2, "density": 0.05, "seed": 0}
SECURE = {"synthetic_users": 12, "synthetic_items": 40, "dim": 4, "eval_negatives": 5, "rounds": 1,
          "clients_per_round": 6, "secure_aggregation": True, "secure_degree": 4, "seed": 0}
# what the clients of the client channels send back: through the codec, which takes only finite values
CLIENT_UPLINK = {"prune_method": "topk", "value_codec": "int8"}
METHOD_SETTINGS = {"threshold": {"prune_threshold": 0.01}, "lowrank": {"rank": 4}}  # beside CATALOGUE's
METHOD_VARIANTS = {"lowrank": [{"rank_basis": "model"}]}  # beside every value codec and requested rows
# the intake kind a reply of each message type is logged under (`server.intake`)
LOG_KIND = {MessageType.TRAIN: "train", MessageType.EVALUATE: "evaluate", ROW_QUERY: "rows",
            secagg.KEYS: "secagg-keys", secagg.SHARES: "secagg-shares", secagg.SECURE_TRAIN: "train",
            secagg.UNMASK: "secagg-unmask"}
MESSAGE_TYPES = {"train": MessageType.TRAIN, "evaluate": MessageType.EVALUATE}
CLIENT_ERRORS = ("ProtocolError", "PayloadError", "RoundAbandoned")  # what a client documents raising


# ------------------------------------------------------------ the honest halves
@dataclass(frozen=True)
class Variant:
    """One configuration a channel's cases cycle through; `purpose`: the message that carries the case."""

    label: str
    changes: dict
    purpose: str = "train"


class Setting:
    """One configuration's honest halves: its clients (in process) and the model each case starts from;
    one honest round run first, so that no case's time holds the first call's compilations."""

    def __init__(self, changes: dict) -> None:
        self.cfg = Config.of(**changes)
        self.inner = InProcessTransport(self.cfg)
        self.spec = model_spec(self.cfg.model, self.inner.split.n_items)
        rng = np.random.default_rng(0)
        self.params = {name: rng.normal(scale=0.1, size=shape).astype(np.float32)
                       for name, shape in self.spec.shapes.items()}
        if self.cfg.compression.model_sparsity:  # a pruned model: half its entries zero
            for value in self.params.values():
                value[rng.random(value.shape) < 0.5] = 0.0
        warm = self.federation()
        warm.train(1, self.inner)
        if self.cfg.federation.federated_eval_clients:
            warm.federated_evaluation(1, self.inner)

    def federation(self) -> Federation:
        params = {name: value.copy() for name, value in self.params.items()}
        return Federation(self.cfg, list(range(len(self.inner.partitions))), params, self.spec,
                          lambda p, r=0: {}, Ledger())

    def client(self, partition: int) -> ClientData:
        return ClientData.of(partition, self.inner.split, np.asarray(self.inner.partitions[partition]),
                             self.inner.device)


_SETTINGS: dict[tuple, Setting] = {}


def setting(changes: dict) -> Setting:
    key = tuple(sorted(changes.items()))
    if key not in _SETTINGS:
        _SETTINGS[key] = Setting(changes)
    return _SETTINGS[key]


# ------------------------------------------------------------ npy bytes
DESCRS = ("|u0", "<f3", "<f0", "<i0", "|S0", "|V0", "<f16", "<c8", "|O", "<U4", "|V4", "<m8", "<M8", "|b1",
          ">f4", "<f2", "<f8", "|i1", "<i8", ">u2", "|u1", "<f4", "f4", "=f4", "<u1")


def npy_bytes(descr: str, shape: object, body: bytes, fortran: object = False, version: int = 1) -> bytes:
    """npy bytes with the header these fields give (whatever they are)."""
    size = 2 if version == 1 else 4
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}".encode()
    header += b" " * (-(len(header) + 9 + size) % 64) + b"\n"
    return b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(size, "little") + header + body


def _parts(array: NpyArray) -> tuple[str, tuple[int, ...], bytes]:
    """(descr, shape, values' bytes) of an honest array."""
    values = array_of(array, writable=False)
    return np.lib.format.dtype_to_descr(values.dtype), values.shape, values.tobytes()


def _rewrap(array: NpyArray, body: bytes) -> NpyArray:
    """`body` as the array's values: a 1-D array takes the length it now has,
    any other keeps its header's shape (which then may not fit)."""
    descr, shape, _ = _parts(array)
    itemsize = np.dtype(descr).itemsize
    if len(shape) == 1 and len(body) % itemsize == 0:
        shape = (len(body) // itemsize,)
    return NpyArray(array.dtype, shape, npy_bytes(descr, shape, body), array.stype)


def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9)) if out else 0):
        out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _pick(rng: np.random.Generator, options: list | tuple) -> object:
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------ array mutations
ArrayMutation = Callable[[NpyArray, NpyArray, np.random.Generator], object]


def _splice(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    body, other = _parts(array)[2], _parts(donor)[2]
    cut = int(rng.integers(0, min(len(body), len(other)) + 1))
    return _rewrap(array, body[:cut] + other[cut:])


def _npy_dtype(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    """Another dtype in the header (one-char ones numpy refuses: '|u0', '<f3'), the shape kept or fitted."""
    _, shape, body = _parts(array)
    descr = str(_pick(rng, DESCRS))
    try:
        itemsize = np.dtype(descr).itemsize
    except (TypeError, ValueError):  # a dtype numpy does not know
        itemsize = 0
    if itemsize and rng.random() < 0.5:
        shape = (len(body) // itemsize,)
    return NpyArray(array.dtype, array.shape, npy_bytes(descr, shape, body), array.stype)


def _npy_header(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    """A header that lies or cannot be read: order, shape, version, its length field, its text."""
    descr, shape, body = _parts(array)
    n = max(1, len(body) // max(np.dtype(descr).itemsize, 1))
    variant = int(rng.integers(11))
    if variant == 0:
        data = npy_bytes(descr, shape, body, fortran=True)
    elif variant == 1:
        data = npy_bytes(descr, _pick(rng, [(n + 1,), (n - 1,), (n, 1), (1, n), (), (0,), (2 * n,)]), body)
    elif variant == 2:
        data = npy_bytes(descr, _pick(rng, [(-1,), (-n,), (2**63,), (2**40, 2**40), (2**64 + n,), ((n,),)]), body)
    elif variant == 3:
        data = npy_bytes(descr, shape, body, version=int(_pick(rng, [2, 3])))
    elif variant == 4:
        data = npy_bytes(descr, shape, body, version=int(_pick(rng, [0, 4, 9, 255])))
    elif variant == 5:
        data = bytearray(npy_bytes(descr, shape, body))
        data[8:10] = int(rng.integers(0, 65536)).to_bytes(2, "little")
        data = bytes(data)
    elif variant == 6:
        data = npy_bytes(descr, shape, body, fortran=_pick(rng, ["no", None, 1, []]))
    elif variant == 7:
        data = npy_bytes(str(_pick(rng, ["", "f4 ", "<f4<", "x", "float32", "<f4\x00"])), shape, body)
    elif variant == 8:
        header = _pick(rng, [b"{'descr': '<f4'}", b"[1, 2]", b"{'descr': [('a', '<f4')], 'fortran_order': False,"
                             b" 'shape': (1,), }", b"__import__('os')", b"\xff\xfe", b"{" * 600])
        header += b" " * (-(len(header) + 11) % 64) + b"\n"
        data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body
    elif variant == 9:
        data = b"\x93NUMPY\x01\x00\xff\xff" + b"{" * int(rng.integers(0, 64))  # a header longer than the bytes
    else:
        data = npy_bytes(descr, shape, body)[: int(rng.integers(0, 10))]  # cut inside the magic
    return NpyArray(array.dtype, array.shape, data, array.stype)


def _huge_header(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    """An npy header that claims 10^12 entries, 16 bytes after it."""
    descr = str(_pick(rng, ["<f4", "|u1", "<f2"]))
    return NpyArray(array.dtype, array.shape, npy_bytes(descr, (10**12,), bytes(16)), array.stype)


def _zip(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", array.data)
    return NpyArray(array.dtype, array.shape, buffer.getvalue(), array.stype)


def _float_data(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    shape = _pick(rng, [(int(rng.integers(1, 100)),), (int(rng.integers(1, 40)), 4), ()])
    return npy_array(rng.normal(size=shape).astype(np.float32))


def _wrong_dtype(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    """The same values, well-formed, as another dtype (float64 for float32, float32 for bytes...)."""
    values = array_of(array)
    return npy_array(values.astype(str(_pick(rng, ["<f8", "<f4", "<f2", ">f4", "<i4", "|i1", "|u1", "?"]))))


def _huge_values(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    """A float array with a few entries finite but huge (a byte array: its bits flipped instead)."""
    values = array_of(array)
    if values.dtype.kind != "f" or not values.size:
        return _rewrap(array, _flip(_parts(array)[2], rng))
    flat = values.reshape(-1)
    at = rng.integers(flat.size, size=int(rng.integers(1, 9)))
    huge = min(float(_pick(rng, [3e38, 1e30, 1e15, 1e6])), float(np.finfo(values.dtype).max))
    flat[at] = rng.choice([-1, 1], len(at)) * huge
    return npy_array(values)


def _meta(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> NpyArray:
    """The array's own fields lie about its bytes."""
    variant = int(rng.integers(3))
    if variant == 0:
        return NpyArray(str(_pick(rng, ["float32", "uint8", "int64", "object", ""])), array.shape, array.data,
                        array.stype)
    if variant == 1:
        return NpyArray(array.dtype, _pick(rng, [(), (10**12,), (1, 2), (-1,)]), array.data, array.stype)
    return NpyArray(array.dtype, array.shape, array.data, str(_pick(rng, ["", "numpy.ndarray.x", "pickle"])))


def _wrong_type(array: NpyArray, donor: NpyArray, rng: np.random.Generator) -> object:
    """Something else where an array belongs, or an array whose fields are of the wrong type."""
    return _pick(rng, [array.data, None, 3, "x", np.zeros(3, np.float32), [array.data],
                       NpyArray(array.dtype, array.shape, bytearray(array.data), array.stype),
                       NpyArray(array.dtype, array.shape, memoryview(array.data), array.stype),
                       NpyArray(array.dtype, array.shape, array.data.decode("latin-1"), array.stype),
                       NpyArray(array.dtype, array.shape, None, array.stype),
                       NpyArray(None, None, array.data, None)])  # fmt: skip


ARRAY_MUTATIONS: dict[str, ArrayMutation] = {
    "flip": lambda a, d, rng: _rewrap(a, _flip(_parts(a)[2], rng)),
    "truncate": lambda a, d, rng: _rewrap(a, _parts(a)[2][: int(rng.integers(len(_parts(a)[2]) + 1))]),
    "extend": lambda a, d, rng: _rewrap(a, _parts(a)[2] + rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8)
                                        .tobytes()),
    "splice": _splice,
    "raw-flip": lambda a, d, rng: NpyArray(a.dtype, a.shape, _flip(a.data, rng), a.stype),
    "raw-cut": lambda a, d, rng: NpyArray(a.dtype, a.shape, a.data[: int(rng.integers(len(a.data)))], a.stype),
    "npy-dtype": _npy_dtype,
    "npy-header": _npy_header,
    "huge-header": _huge_header,
    "zip": _zip,
    "float-data": _float_data,
    "wrong-dtype": _wrong_dtype,
    "huge-values": _huge_values,
    "meta": _meta,
    "wrong-type": _wrong_type,
}


# ------------------------------------------------------------ record and content mutations
Mutation = Callable[[Content, Content, str, np.random.Generator], Content]


def _on_array(mutation: ArrayMutation) -> Mutation:
    """A mutation of one array of the record."""

    def mutate(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
        arrays = dict(content[record])
        name = str(_pick(rng, sorted(arrays)))
        others = donor.get(record) if isinstance(donor.get(record), Arrays) else {}
        arrays[name] = mutation(arrays[name], others.get(name, arrays[name]), rng)
        return Content({**content, record: Arrays(arrays)})

    return mutate


def _on_record(mutation: Callable[[dict, np.random.Generator], object]) -> Mutation:
    def mutate(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
        return Content({**content, record: mutation(dict(content[record]), rng)})

    return mutate


def _swap(arrays: dict, rng: np.random.Generator) -> Arrays:
    names = sorted(arrays)
    if len(names) < 2:
        return Arrays({name + "x": value for name, value in arrays.items()})
    return Arrays({a: arrays[b] for a, b in zip(names, names[1:] + names[:1])})


def _drop(arrays: dict, rng: np.random.Generator) -> Arrays:
    arrays.pop(str(_pick(rng, sorted(arrays))))
    return Arrays(arrays)


def _rename(arrays: dict, rng: np.random.Generator) -> Arrays:
    name = str(_pick(rng, sorted(arrays)))
    arrays[str(_pick(rng, [name + "x", name.upper(), "", name + "/scales"]))] = arrays.pop(name)
    return Arrays(arrays)


def _extra(arrays: dict, rng: np.random.Generator) -> Arrays:
    value = arrays[str(_pick(rng, sorted(arrays)))]
    count = int(_pick(rng, [1, 1, 100, 5000]))
    return Arrays({**arrays, **{f"extra-{i}": value for i in range(count)}})


def _record_type(record: dict, rng: np.random.Generator) -> object:
    """The record as another kind (or no record at all)."""
    return _pick(rng, [ConfigMap({k: b"x" for k in record}), MetricMap({k: 1.0 for k in record}), dict(record),
                       Arrays(), None, [1, 2], b"x", Content({"x": Arrays()})])


RECORD_MUTATIONS: dict[str, Mutation] = {
    "swap": _on_record(_swap), "drop": _on_record(_drop), "rename": _on_record(_rename),
    "extra": _on_record(_extra), "empty": _on_record(lambda arrays, rng: Arrays()),
    "record-type": _on_record(_record_type),
}
BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), -5.0, 1.5, 1e300, -1e300, 2**70, [1.0, 2.0], [], True,
               "5", None, b"1", {"a": 1}, -0.0, 0]


def _metrics(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
    """One metric of the reply non-finite, out of range or of the wrong type, or gone."""
    metrics = dict(content.get("metrics") or {})
    key = str(_pick(rng, sorted(metrics) or ["num-examples"]))
    if rng.random() < 0.1:
        metrics.pop(key, None)
    else:
        metrics[key] = _pick(rng, BAD_NUMBERS)
    return Content({**content, "metrics": MetricMap(metrics)})


def _metric_count(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
    """More metrics than any reply has: a few, or thousands."""
    count = int(_pick(rng, [5, 17, 100, 5000]))
    extra = {f"m{i}": float(i) for i in range(count)}
    return Content({**content, "metrics": MetricMap({**(content.get("metrics") or {}), **extra})})


def _info(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
    """A reply's own account of where it ran, too large or of the wrong kind."""
    info = _pick(rng, [ConfigMap({"partition-id": 0, "host": "h" * 10**6}),
                       ConfigMap({f"k{i}": i for i in range(5000)}),
                       ConfigMap({"host": [b"x" * 100] * 10_000, "ray-node": "=cmd|' /C calc'!A0"}),
                       ConfigMap({"host": 5, "partition-id": "x"}),
                       Arrays({"host": npy_array(np.zeros(10**6, np.uint8))}), None])  # fmt: skip
    return Content({**content, "info": info})


def _extra_records(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
    """Records no message of this kind carries: many small ones, or one large one."""
    if rng.random() < 0.5:
        extra = {f"r{i}": ConfigMap({"x": i}) for i in range(int(_pick(rng, [1, 20, 1000])))}
    else:
        extra = {"extra": Arrays({"x": npy_array(np.zeros(10**6, np.float32))})}
    return Content({**content, **extra})


def _drop_record(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
    names = sorted(content)
    content = Content(content)
    if names:
        content.pop(str(_pick(rng, names)))
    return content


ROUNDS = [None, "1", 1.5, -1, 0, 2**32, 2**64, True, [1], b"1", float("nan"), 10**30]
PURPOSES = [None, "", "train ", "bogus", 1, ["train"], b"train", "evaluate\x00"]


def _config(content: Content, donor: Content, record: str, rng: np.random.Generator) -> Content:
    """The message's config: its round or purpose wrong, gone or ill-typed; or the record of another kind."""
    config = dict(content.get("config") or {})
    variant = int(rng.integers(4))
    if variant == 0:
        value = _pick(rng, ROUNDS)
        config.pop("server-round", None) if value is None else config.__setitem__("server-round", value)
    elif variant == 1:
        value = _pick(rng, PURPOSES)
        config.pop("purpose", None) if value is None else config.__setitem__("purpose", value)
    elif variant == 2:
        return Content({**content, "config": _pick(rng, [Arrays(), MetricMap({"server-round": 1.0}), None, "x",
                                                          ConfigMap()])})
    else:
        config["clients"] = list(range(int(_pick(rng, [0, 10, 100_000]))))
    return Content({**content, "config": ConfigMap(config)})


CONTENT_MUTATIONS: dict[str, Mutation] = {
    "metrics": _metrics, "metric-count": _metric_count, "info": _info, "extra-records": _extra_records,
    "drop-record": _drop_record, "config": _config,
}
PAYLOAD_KINDS = (*ARRAY_MUTATIONS, *RECORD_MUTATIONS)
REPLY_KINDS = ("metrics", "metric-count", "info", "extra-records", "drop-record")
MESSAGE_KINDS = ("config", "extra-records", "drop-record")


def mutation(kinds: tuple[str, ...], record: str) -> Callable[[Content, Content, np.random.Generator],
                                                                tuple[str, Content]]:
    """A mutator drawing one of `kinds` for `record` (the payload) of a content."""

    def mutate(content: Content, donor: Content, rng: np.random.Generator) -> tuple[str, Content]:
        kind = str(_pick(rng, kinds))
        if kind in ARRAY_MUTATIONS:
            return kind, _on_array(ARRAY_MUTATIONS[kind])(content, donor, record, rng)
        if kind in RECORD_MUTATIONS:
            return kind, RECORD_MUTATIONS[kind](content, donor, record, rng)
        return kind, CONTENT_MUTATIONS[kind](content, donor, record, rng)

    return mutate


# ------------------------------------------------------------ secure aggregation's messages
def mutate_secure(content: Content, donor: Content, rng: np.random.Generator) -> tuple[str, Content]:
    """One mutation of a secure-aggregation reply (`donor`: another client's, to replay)."""
    kind = str(_pick(rng, ["flip", "truncate", "extend", "retype", "drop-field", "replay", "duplicate-id",
                           "zero-key", "empty", "beside"]))
    if kind == "replay":
        return kind, Content(donor)
    if kind == "empty":
        return kind, Content()
    if kind == "beside":
        return mutation(REPLY_KINDS, "")(content, donor, rng)
    if "masked" in content:  # a masked input: npy bytes of ring elements
        return mutation(PAYLOAD_KINDS, "masked")(content, donor, rng)
    record = ConfigMap(content[secagg.RECORD])
    name = str(_pick(rng, sorted(record)))
    value = record[name]
    if kind == "drop-field":
        del record[name]
    elif kind == "retype":
        record[name] = _pick(rng, [[1.5], 3, "x", None, [b"x"], [1, "x"]])
    elif kind == "duplicate-id" and isinstance(value, list) and value and isinstance(value[0], int):
        record[name] = value[:1] * len(value)
    elif kind == "zero-key":  # the all-zero X25519 point, zeroed shares, or ids all 0
        record[name] = bytes(32) if isinstance(value, bytes) else \
            [bytes(len(v)) if isinstance(v, bytes) else 0 for v in value]
    else:
        blobs = value if isinstance(value, list) else [value]
        if not blobs or not isinstance(blobs[0], bytes):
            record[name] = value[:-1] if isinstance(value, list) else value + 1
        else:
            j = int(rng.integers(len(blobs)))
            data = bytes(blobs[j])
            if kind == "truncate":
                data = data[: int(rng.integers(len(data) + 1))]
            elif kind == "extend":
                data += bytes(int(rng.integers(1, 9)))
            else:
                data = _flip(data, rng)
            blobs = [*blobs[:j], data, *blobs[j + 1:]]
            record[name] = blobs if isinstance(value, list) else blobs[0]
    return kind, Content({**content, secagg.RECORD: record})


# ------------------------------------------------------------ one case
class Meter:
    """Time and peak traced memory of one case, less what `paused_for_clients`
    leaves out (a round's clients: untraced, their time not counted; the
    peak is then the largest of the server's stretches, each from what it
    allocated itself)."""

    def __enter__(self) -> Meter:
        tracemalloc.start()
        self.peak, self.paused, self.started = 0, 0.0, time.perf_counter()
        return self

    @contextmanager
    def paused_for_clients(self) -> Iterator[None]:
        self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - started
            tracemalloc.start()

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started - self.paused
        self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@dataclass
class Case:
    kind: str
    result: str  # accepted, rejected, abandoned, unexpected
    finite: bool
    seconds: float
    peak: int
    error: str = ""
    client_errors: list[str] = field(default_factory=list)


def _unexpected(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:300]


class MutatingTransport:
    """The in-process clients, with the first reply to `target` that came back
    mutated on its way (the clients and the mutation are left out of the meter)."""

    def __init__(self, inner: InProcessTransport, target: str, mutate, meter: Meter, rng: np.random.Generator) -> None:
        self.inner, self.target, self.mutate, self.meter, self.rng = inner, target, mutate, meter, rng
        self.kind, self.partition, self.client_errors = "", None, []

    def exchange(self, message_type, messages):
        with self.meter.paused_for_clients():
            replies = self.inner.exchange(message_type, messages)
            self.client_errors += [r.error for r in replies if r.content is None]
            good = [i for i, r in enumerate(replies) if r.content is not None]
            if message_type == self.target and good and self.partition is None:
                i = good[int(self.rng.integers(len(good)))]
                donor = replies[good[(good.index(i) + 1) % len(good)]].content  # another client's message
                self.kind, content = self.mutate(replies[i].content, donor, self.rng)
                self.partition = replies[i].partition
                replies[i] = Reply(replies[i].partition, replies[i].node, content)
        return replies


@dataclass(frozen=True)
class ServerChannel:
    """Replies of one message type (`targets`, cycled by case) mutated on their way to the server."""

    name: str
    variants: list[Variant]
    targets: tuple[str, ...]
    mutate: Callable

    def run_case(self, variant: Variant, case: int, rng: np.random.Generator) -> Case:
        s = setting(variant.changes)
        federation, server_round = s.federation(), 1 + case
        target = self.targets[case // len(self.variants) % len(self.targets)]
        run = federation.train if variant.purpose == "train" else federation.federated_evaluation
        with Meter() as meter:
            transport = MutatingTransport(s.inner, target, self.mutate, meter, rng)
            try:
                run(server_round, transport)
                result, error = _server_outcome(federation, server_round, transport), ""
            except Exception as err:  # noqa: BLE001 - what the benchmark is here to find
                result, error = "unexpected", _unexpected(err)
        finite = all(np.isfinite(v).all() for v in federation.params.values())
        return Case(f"{target} {transport.kind}" if len(self.targets) > 1 else transport.kind, result, finite,
                    meter.seconds, meter.peak, error, transport.client_errors)


def _server_outcome(federation: Federation, server_round: int, transport: MutatingTransport) -> str:
    """What the server made of the mutated reply: its intake status, or the round abandoned."""
    if federation.ledger.round(server_round).metrics.get("secure-abandoned"):
        return "abandoned"
    statuses = [r.status for r in federation.ledger.replies if r.round == server_round
                and r.partition == transport.partition and r.kind == LOG_KIND[transport.target]]
    return statuses[0] if statuses else "not-logged"


@dataclass(frozen=True)
class ClientChannel:
    """Messages of one purpose ("train", "evaluate", "query" for a row query) mutated on their way to a client."""

    name: str
    variants: list[Variant]
    record: str  # the record its payload mutations change
    kinds: tuple[str, ...]

    def run_case(self, variant: Variant, case: int, rng: np.random.Generator) -> Case:
        s = setting(variant.changes)
        federation, server_round = s.federation(), 1 + case
        partition, other = federation.sample(server_round, 2, TRAIN_STREAM)
        if variant.purpose == "query":
            message_type, purpose = ROW_QUERY, str(_pick(rng, ["train", "evaluate"]))
            honest, donor = row_query(server_round, purpose), row_query(server_round + 1, purpose)
        else:
            message_type, purpose = MESSAGE_TYPES[variant.purpose], variant.purpose
            honest, donor = (m.content for m in federation.messages(server_round, [partition, other], purpose, s.inner))
        kind, content = mutation(self.kinds, self.record)(honest, donor, rng)
        client = s.client(partition)
        with Meter() as meter:
            try:
                dispatch.answer(message_type, s.cfg, content, s.inner.home, client, isolated=False)
                result, error = "accepted", ""
            except PayloadError:
                result, error = "rejected", ""
            except Exception as err:  # noqa: BLE001 - what the benchmark is here to find
                result, error = "unexpected", _unexpected(err)
        finite = result != "accepted" or variant.purpose not in MESSAGE_TYPES or \
            all(np.isfinite(v).all() for v in receive(s.cfg, content, client, purpose).shared.values())
        return Case(kind, result, finite, meter.seconds, meter.peak, error)



# ------------------------------------------------------------ the channels
def uplink_variants(method: str) -> list[Variant]:
    """Every value codec, requested rows, and the method's own variants."""
    base = {**CATALOGUE, "prune_method": method, **METHOD_SETTINGS.get(method, {})}
    variants = [Variant(codec, {**base, "value_codec": codec}) for codec in VALUES.names()]
    variants.append(Variant("int8 requested-rows", {**base, "value_codec": "int8", "broadcast_rows": "requested"}))
    for extra in METHOD_VARIANTS.get(method, []):
        variants.append(Variant(" ".join(f"{k}={v}" for k, v in extra.items()), {**base, **extra}))
    return variants


def broadcast_variants(codec: str) -> list[Variant]:
    base = {**CATALOGUE, **CLIENT_UPLINK, "downlink_codec": codec}
    return [Variant("train", base), Variant("evaluate", base, "evaluate"),
            Variant("train requested-rows", {**base, "broadcast_rows": "requested"}),
            Variant("evaluate requested-rows", {**base, "broadcast_rows": "requested"}, "evaluate"),
            Variant("train pruned-model", {**base, "model_sparsity": 0.5})]


SECURE_LAYOUTS = {
    "every-coordinate": {"prune_method": "none"},
    "randomk": {"prune_method": "randomk", "density": 0.25},
    "lowrank-model-basis": {"prune_method": "lowrank", "rank": 2, "rank_basis": "model"},
    "bandit-rows": {"prune_method": "none", "broadcast_rows": "bandit", "bandit_items": 0.5},
}


def channels() -> list[ServerChannel | ClientChannel]:
    payload = PAYLOAD_KINDS + REPLY_KINDS
    requested = {**CATALOGUE, "broadcast_rows": "requested"}
    out: list[ServerChannel | ClientChannel] = [
        ServerChannel(f"uplink/{method}", uplink_variants(method), (MessageType.TRAIN,), mutation(payload, "arrays"))
        for method in UPLINK.names()]
    out += [
        ServerChannel("rows", [Variant("train", requested), Variant("evaluate", requested, "evaluate")],
                      (ROW_QUERY,), mutation(payload, "rows")),
        ServerChannel("evaluate", [Variant("evaluate", CATALOGUE, "evaluate")], (MessageType.EVALUATE,),
                      mutation((*REPLY_KINDS, "record-type"), "metrics")),
    ]
    out += [ClientChannel(f"broadcast/{codec}", broadcast_variants(codec), "arrays", PAYLOAD_KINDS + MESSAGE_KINDS)
            for codec in DOWNLINK.names()]
    bandit = {**CATALOGUE, **CLIENT_UPLINK, "broadcast_rows": "bandit", "bandit_items": 0.25}
    out += [
        ClientChannel("named-rows", [Variant("fp32", bandit), Variant("int8", {**bandit, "downlink_codec": "int8"})],
                      "rows", PAYLOAD_KINDS + MESSAGE_KINDS),
        ClientChannel("basis", [Variant("rank 4", {**CATALOGUE, "prune_method": "lowrank", "rank": 4,
                                                   "rank_basis": "model"})], "basis", PAYLOAD_KINDS + MESSAGE_KINDS),
        ClientChannel("row-query", [Variant("requested", {**requested, **CLIENT_UPLINK}, "query")], "config",
                      MESSAGE_KINDS),
    ]
    exchanges = (secagg.KEYS, secagg.SHARES, secagg.SECURE_TRAIN, secagg.UNMASK)
    out += [ServerChannel(f"secure/{name}", [Variant(name, {**SECURE, **changes})], exchanges, mutate_secure)
            for name, changes in SECURE_LAYOUTS.items()]
    return out


# ------------------------------------------------------------ the run
def run_channel(channel: ServerChannel | ClientChannel, cases: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, zlib.crc32(channel.name.encode())])
    outcomes: dict[str, dict[str, int]] = {}
    unexpected: list[str] = []
    client_errors: dict[str, int] = {}
    unexpected_clients: list[str] = []  # clients that failed with an error they do not document
    worst = {"seconds": 0.0, "case": ""}
    peak = {"bytes": 0, "case": ""}
    non_finite = 0
    started = time.perf_counter()
    for case in range(cases):
        variant = channel.variants[case % len(channel.variants)]
        c = channel.run_case(variant, case, rng)
        label = f"{variant.label} / {c.kind}"
        outcomes.setdefault(label, {}).setdefault(c.result, 0)
        outcomes[label][c.result] += 1
        if c.result == "accepted" and not c.finite:
            non_finite += 1
        if c.error:
            unexpected.append(f"{label}: {c.error}")
        for error in c.client_errors:
            name = error.split(":")[0]
            client_errors[name] = client_errors.get(name, 0) + 1
            if name not in CLIENT_ERRORS:
                unexpected_clients.append(f"{label}: client {error}"[:300])
        if c.seconds > worst["seconds"]:
            worst = {"seconds": c.seconds, "case": label}
        if c.peak > peak["bytes"]:
            peak = {"bytes": c.peak, "case": label}
    _SETTINGS.clear()  # the clients' states of this channel's settings
    results = ("accepted", "rejected", "abandoned", "unexpected")
    totals = {r: sum(o.get(r, 0) for o in outcomes.values()) for r in results}
    totals["other"] = cases - sum(totals.values())
    out = {"cases": cases, "seconds": round(time.perf_counter() - started, 1), "totals": totals,
           "non_finite_models": non_finite, "worst_seconds": worst, "peak_memory": peak,
           "unexpected": unexpected[:20]}
    if client_errors:
        out["client_errors"] = dict(sorted(client_errors.items()))
        out["unexpected_client_errors"] = unexpected_clients[:20]
    out["by_variant_and_mutation"] = dict(sorted(outcomes.items()))
    return out


def run_named(name: str, cases: int, seed: int) -> dict:
    """`run_channel` of the channel called `name` (what a worker process is given: channels do not pickle)."""
    logging.getLogger("prunus").setLevel(logging.CRITICAL)  # one warning per rejected case (and failed client) otherwise
    return run_channel(next(c for c in channels() if c.name == name), cases, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="cases per channel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", default="*", help="comma-separated name patterns (default: every channel)")
    parser.add_argument("--jobs", type=int, default=1, help="channels run at once, each in a process of its own")
    parser.add_argument("--list", action="store_true", help="list the channels and exit")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz_replies.json"))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other channels of an existing --out file (rerun only what changed)")
    args = parser.parse_args()
    chosen = [c for c in channels() if any(fnmatch.fnmatch(c.name, p) for p in args.channels.split(","))]
    if args.list:
        print("\n".join(f"{c.name}: {', '.join(v.label for v in c.variants)}" for c in chosen))
        return
    result: dict = {"command": f"python benchmarks/fuzz_replies.py --cases {args.cases} --seed {args.seed} "
                               f"--jobs {args.jobs}" + (f" --channels '{args.channels}'" if args.channels != "*" else ""),
                    "cases_per_channel": args.cases, "seed": args.seed, "channels": {}}
    names = [c.name for c in chosen]
    kept = json.loads(Path(args.out).read_text())["channels"] if args.merge and Path(args.out).exists() else {}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = {pool.submit(run_named, name, args.cases, args.seed): name for name in names}
        for done in as_completed(runs):
            result["channels"][runs[done]] = {**done.result(), "code": code_version(), "command": result["command"]}
            summary = {k: done.result()[k] for k in ("seconds", "totals", "non_finite_models")}
            print(runs[done], json.dumps(summary), flush=True)
    order = [c.name for c in channels() if c.name in result["channels"] or c.name in kept]
    result["channels"] = {name: result["channels"].get(name) or kept[name] for name in order}  # channels' order
    per = result["channels"].values()
    result["totals"] = {"channels": len(per), "cases": sum(c["cases"] for c in per),
                        "unexpected": sum(c["totals"]["unexpected"] for c in per),
                        "non_finite_models": sum(c["non_finite_models"] for c in per),
                        "seconds": round(sum(c["seconds"] for c in per), 1)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["totals"]))


if __name__ == "__main__":
    main()
