"""Fuzz the whole server path with mutated honest replies.

Honest train replies (ML-100K-sized MF update: 1,682 items x d=32, several
uplink methods) are mutated: bit flips, truncation and extension of payload
bytes, splicing two payloads, container swaps (an array under another
tensor's name, a zip archive, an npy header that claims 10^12 entries, a
float array where bytes belong), and metric mutations (non-finite, negative,
huge or wrongly typed counts and losses). Each mutated reply goes through the
server exactly as a real one does (`Federation.train`: byte count,
validation, decoding, aggregation, the optimiser step and the finite check),
one per round. A case ends in one of three ways: accepted, rejected with the
documented reply error, or anything else (a bug). For accepted cases the
global model must stay finite. Time and peak memory per case are recorded.

Secure aggregation's exchanges are a channel of their own (`--secure`
cases): a round of 6 clients in which one client's message of one exchange
(keys, sealed shares, masked input, unmask answer) is mutated (bytes
flipped, cut or extended, wrong types and lengths, another client's or
another round's message replayed): it must be rejected or the round
abandoned, never anything else and never a non-finite model.

    python benchmarks/fuzz_replies.py --cases 10000 --secure 10000   # writes benchmarks/results/fuzz_replies.json
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np

from prunus.common.compression import UPLINK, RoundContext, make
from prunus.common.config import Config
from prunus.common.models import ModelSpec
from prunus.common.params import npy_array
from prunus.common.payload import Arrays, ConfigMap, Content, MetricMap, NpyArray
from prunus.server.federation import Federation
from prunus.server.ledger import Ledger
from prunus.server.transport import Reply

N_ITEMS, DIM = 1682, 32
SHAPES = {"item_embedding.weight": (N_ITEMS, DIM), "item_bias.weight": (N_ITEMS, 1)}
SPEC = ModelSpec(SHAPES, ("item_embedding.weight",), tuple(SHAPES))
METHODS = {  # uplink method -> its settings
    "topk-global int8": {"prune_method": "topk-global", "density": 0.01, "value_codec": "int8"},
    "none fp32": {"prune_method": "none"},
    "threshold fp16": {"prune_method": "threshold", "prune_threshold": 0.01, "value_codec": "fp16"},
    "lowrank int8": {"prune_method": "lowrank", "rank": 4, "value_codec": "int8"},
}


class OneReply:
    """A transport that answers the round's first message with the given content."""

    def __init__(self, content: Content) -> None:
        self.content = content

    def exchange(self, message_type, messages):
        return [Reply(messages[0].partition, 1, self.content)]


def honest(cfg: Config, rng: np.random.Generator, server_round: int) -> Content:
    """A well-formed reply: a row-sparse update encoded by the method's client half."""
    rows = rng.choice(N_ITEMS, 200, replace=False)
    update = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
    for name in SHAPES:
        update[name][rows] = rng.normal(scale=0.05, size=(len(rows), SHAPES[name][1]))
    uplink = make(UPLINK, cfg.compression.prune_method, cfg)
    encoded = uplink.encode(update, None, RoundContext(server_round, 0, cfg.runtime.seed))
    return Content({"arrays": encoded.record, "metrics": MetricMap({"num-examples": 40, "train-loss": 0.5}),
                       "info": ConfigMap({"partition-id": 0, "host": "h"})})


def _raw(array: NpyArray) -> bytes:
    return array.data if isinstance(array.data, bytes) else bytes(array.data)


def _bytes_array(data: bytes) -> NpyArray:
    return npy_array(np.frombuffer(data, dtype=np.uint8).copy())


def mutate(content: Content, other: Content, rng: np.random.Generator) -> tuple[str, Content]:
    """One mutation of `content` (`other`: a second honest reply to splice from)."""
    arrays = dict(content["arrays"])
    name = sorted(arrays)[rng.integers(len(arrays))]
    data = bytearray(_raw(arrays[name]))
    kind = rng.choice(["flip", "truncate", "extend", "splice", "swap", "zip", "huge-header", "float-data",
                       "metrics", "drop", "rename"])  # fmt: skip
    metrics = dict(content["metrics"])
    if kind == "flip":
        for _ in range(rng.integers(1, 9)):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        arrays[name] = npy_array(np.frombuffer(bytes(data), np.uint8).copy()) if arrays[name].dtype == "uint8" else \
            _npy_flip(arrays[name], rng)
    elif kind == "truncate":
        arrays[name] = _rebuild(arrays[name], bytes(data[: rng.integers(len(data))]))
    elif kind == "extend":
        arrays[name] = _rebuild(arrays[name], bytes(data) + rng.integers(0, 256, rng.integers(1, 64), np.uint8).tobytes())
    elif kind == "splice":
        donor = _raw(dict(other["arrays"])[name])
        cut = rng.integers(1, min(len(data), len(donor)))
        arrays[name] = _rebuild(arrays[name], bytes(data[:cut]) + donor[cut:])
    elif kind == "swap":
        names = sorted(arrays)
        arrays = {a: arrays[b] for a, b in zip(names, names[::-1])}
    elif kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("x.npy", bytes(data))
        array = arrays[name]
        arrays[name] = NpyArray(array.dtype, array.shape, buffer.getvalue(), array.stype)
    elif kind == "huge-header":
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
        header += b" " * (-(len(header) + 11) % 64) + b"\n"
        npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16)
        array = arrays[name]
        arrays[name] = NpyArray(array.dtype, array.shape, npy, array.stype)
    elif kind == "float-data":
        arrays[name] = npy_array(rng.normal(size=rng.integers(1, 100)).astype(np.float32))
    elif kind == "metrics":
        key = rng.choice(["num-examples", "train-loss"])
        metrics[key] = [float("nan"), float("inf"), -5.0, 1e300, [1.0, 2.0], 0, -1][rng.integers(7)]
    elif kind == "drop":
        arrays.pop(name)
    else:  # rename
        arrays[name + "x"] = arrays.pop(name)
    return str(kind), Content({"arrays": Arrays(arrays), "metrics": MetricMap(metrics),
                                  "info": content["info"]})  # fmt: skip


def _rebuild(array: NpyArray, data: bytes) -> NpyArray:
    if array.dtype == "uint8":
        return _bytes_array(data)
    return NpyArray(array.dtype, array.shape, data, array.stype)


def _npy_flip(array: NpyArray, rng: np.random.Generator) -> NpyArray:
    data = bytearray(_raw(array))
    data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    return _rebuild(array, bytes(data))


# ------------------------------------------------------ secure aggregation
SECURE_EXCHANGES = ("query.secagg_keys", "query.secagg_shares", "train.secure", "query.secagg_unmask")


class MutatingTransport:
    """The in-process engine, with one reply of one exchange mutated."""

    def __init__(self, inner, target: str, rng: np.random.Generator) -> None:
        self.inner, self.target, self.rng, self.kind, self.previous = inner, target, rng, "", {}

    def exchange(self, message_type, messages):
        replies = self.inner.exchange(message_type, messages)
        good = [i for i, r in enumerate(replies) if r.content is not None]
        if message_type == self.target and good:
            i = good[int(self.rng.integers(len(good)))]
            donor = replies[good[(good.index(i) + 1) % len(good)]].content  # another client's message
            self.kind, content = mutate_secure(replies[i].content, donor, self.rng)
            replies[i] = Reply(replies[i].partition, replies[i].node, content)
        return replies


def mutate_secure(content: Content, donor: Content, rng: np.random.Generator) -> tuple[str, Content]:
    """One mutation of a secure-aggregation reply (`donor`: another client's, to replay)."""
    content = Content(content)
    kind = str(rng.choice(["flip", "truncate", "extend", "retype", "drop-field", "replay", "duplicate-id",
                           "zero-key", "empty"]))
    if kind == "replay":
        return kind, Content(donor)
    if kind == "empty":
        return kind, Content()
    if "masked" in content:  # a masked input: npy bytes of ring elements
        array = content["masked"]["y"]
        data = bytearray(array.data)
        if kind == "truncate":
            data = data[: int(rng.integers(len(data)))]
        elif kind == "extend":
            data += bytes(int(rng.integers(1, 9)))
        elif kind in ("retype", "drop-field", "duplicate-id", "zero-key"):
            content["masked"] = Arrays({"y": npy_array(rng.normal(size=4).astype(np.float32))})
            return kind, content
        else:
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        content["masked"] = Arrays({"y": NpyArray(array.dtype, array.shape, bytes(data), array.stype)})
        return kind, content
    record = ConfigMap(content["secagg"])
    name = sorted(record)[int(rng.integers(len(record)))]
    value = record[name]
    if kind == "drop-field":
        del record[name]
    elif kind == "retype":
        record[name] = [1.5] if isinstance(value, list) else 3
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
            data = bytearray(blobs[j])
            if kind == "truncate":
                data = data[: int(rng.integers(len(data) + 1))]
            elif kind == "extend":
                data += bytes(int(rng.integers(1, 9)))
            elif len(data):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            blobs = [*blobs[:j], bytes(data), *blobs[j + 1:]]
            record[name] = blobs if isinstance(value, list) else blobs[0]
    content["secagg"] = record
    return kind, content


def run_secure(cases: int, seed: int) -> dict:
    """Secure rounds of 6 clients, one client's message of one exchange mutated."""
    from prunus.simulations.inprocess import InProcessTransport

    rng = np.random.default_rng(seed)
    cfg = Config.of(synthetic_users=12, synthetic_items=40, eval_negatives=5, dim=4, rounds=1, clients_per_round=6,
                    secure_aggregation=True, secure_degree=4, seed=seed)
    spec_shapes = {"item_embedding.weight": (40, 4), "item_bias.weight": (40, 1)}
    spec = ModelSpec(spec_shapes, ("item_embedding.weight",), tuple(spec_shapes))
    outcomes: dict[str, dict[str, int]] = {}
    unexpected: list[str] = []
    non_finite = 0
    inner = InProcessTransport(cfg)
    for case in range(cases):
        target = SECURE_EXCHANGES[case % len(SECURE_EXCHANGES)]
        params = {name: np.zeros(shape, np.float32) for name, shape in spec_shapes.items()}
        federation = Federation(cfg, list(range(12)), params, spec, lambda p: {}, Ledger())
        transport = MutatingTransport(inner, target, rng)
        try:
            federation.train(1 + case, transport)
            entry = federation.ledger.round(1 + case)
            result = "abandoned" if entry.metrics.get("secure-abandoned") else \
                ("rejected" if entry.rejected or entry.failures else "accepted")
            if not all(np.isfinite(v).all() for v in federation.params.values()):
                non_finite += 1
        except Exception as err:  # noqa: BLE001 - what the benchmark is here to find
            result = "unexpected"
            unexpected.append(f"{target} {transport.kind}: {type(err).__name__}: {err}"[:300])
        key = f"{target} / {transport.kind}"
        outcomes.setdefault(key, {}).setdefault(result, 0)
        outcomes[key][result] += 1
    totals = {r: sum(o.get(r, 0) for o in outcomes.values()) for r in ("accepted", "rejected", "abandoned", "unexpected")}
    return {"cases": cases, "seed": seed, "totals": totals, "non_finite_models": non_finite,
            "unexpected": unexpected[:20], "by_exchange_and_mutation": dict(sorted(outcomes.items()))}


def run(cases: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    outcomes: dict[str, dict[str, int]] = {}
    unexpected: list[str] = []
    worst = {"seconds": 0.0, "peak_bytes": 0, "case": ""}
    non_finite = 0
    for case in range(cases):
        label = list(METHODS)[case % len(METHODS)]
        cfg = Config.of(rounds=1, clients_per_round=1, **METHODS[label])
        params = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
        federation = Federation(cfg, [0], params, SPEC, lambda p: {}, Ledger())
        kind, content = mutate(honest(cfg, rng, 1), honest(cfg, rng, 1), rng)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            federation.train(1, OneReply(content))
            entry = federation.ledger.round(1)
            result = "accepted" if entry.replies else "rejected"
            if not all(np.isfinite(v).all() for v in federation.params.values()):
                non_finite += 1
        except Exception as err:  # noqa: BLE001 - what the benchmark is here to find
            result = "unexpected"
            unexpected.append(f"{label} {kind}: {type(err).__name__}: {err}"[:300])
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if seconds > worst["seconds"]:
            worst.update(seconds=seconds, case=f"{label} {kind}")
        worst["peak_bytes"] = max(worst["peak_bytes"], peak)
        outcomes.setdefault(f"{label} / {kind}", {}).setdefault(result, 0)
        outcomes[f"{label} / {kind}"][result] += 1
    totals = {r: sum(o.get(r, 0) for o in outcomes.values()) for r in ("accepted", "rejected", "unexpected")}
    return {"cases": cases, "seed": seed, "totals": totals, "non_finite_models": non_finite, "worst": worst,
            "unexpected": unexpected[:20], "by_method_and_mutation": dict(sorted(outcomes.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--secure", type=int, default=10_000, help="cases of the secure-aggregation channel")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz_replies.json"))
    args = parser.parse_args()
    logging.getLogger("prunus").setLevel(logging.CRITICAL)  # one warning per rejected case (and failed client) otherwise
    result = run(args.cases, args.seed)
    result["secure"] = run_secure(args.secure, args.seed)
    result["command"] = f"python benchmarks/fuzz_replies.py --cases {args.cases} --secure {args.secure} --seed {args.seed}"
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cases", "totals", "non_finite_models", "worst")}, indent=2))
    print(json.dumps({k: result["secure"][k] for k in ("cases", "totals", "non_finite_models", "unexpected")}, indent=2))


if __name__ == "__main__":
    main()
