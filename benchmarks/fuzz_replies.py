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

    python benchmarks/fuzz_replies.py --cases 10000   # writes benchmarks/results/fuzz_replies.json
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
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from prunus.common.compression import UPLINK, RoundContext
from prunus.common.config import Config
from prunus.common.models import ModelSpec
from prunus.server.federation import Federation, Reply
from prunus.server.ledger import Ledger

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

    def __init__(self, content: RecordDict) -> None:
        self.content = content

    def exchange(self, message_type, messages):
        return [Reply(messages[0].partition, 1, self.content)]


def honest(cfg: Config, rng: np.random.Generator, server_round: int) -> RecordDict:
    """A well-formed reply: a row-sparse update encoded by the method's client half."""
    rows = rng.choice(N_ITEMS, 200, replace=False)
    update = {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
    for name in SHAPES:
        update[name][rows] = rng.normal(scale=0.05, size=(len(rows), SHAPES[name][1]))
    uplink = UPLINK.get(cfg.compression.prune_method)(cfg.compression)
    encoded = uplink.encode(update, None, RoundContext(server_round, 0, cfg.runtime.seed))
    return RecordDict({"arrays": encoded.record, "metrics": MetricRecord({"num-examples": 40, "train-loss": 0.5}),
                       "info": ConfigRecord({"partition-id": 0, "host": "h"})})


def _raw(array: Array) -> bytes:
    return array.data if isinstance(array.data, bytes) else bytes(array.data)


def _bytes_array(data: bytes) -> Array:
    return Array(np.frombuffer(data, dtype=np.uint8).copy())


def mutate(content: RecordDict, other: RecordDict, rng: np.random.Generator) -> tuple[str, RecordDict]:
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
        arrays[name] = Array(np.frombuffer(bytes(data), np.uint8).copy()) if arrays[name].dtype == "uint8" else \
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
        arrays[name] = Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=buffer.getvalue())
    elif kind == "huge-header":
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
        header += b" " * (-(len(header) + 11) % 64) + b"\n"
        npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16)
        array = arrays[name]
        arrays[name] = Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=npy)
    elif kind == "float-data":
        arrays[name] = Array(rng.normal(size=rng.integers(1, 100)).astype(np.float32))
    elif kind == "metrics":
        key = rng.choice(["num-examples", "train-loss"])
        metrics[key] = [float("nan"), float("inf"), -5.0, 1e300, [1.0, 2.0], 0, -1][rng.integers(7)]
    elif kind == "drop":
        arrays.pop(name)
    else:  # rename
        arrays[name + "x"] = arrays.pop(name)
    return str(kind), RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics),
                                  "info": content["info"]})  # fmt: skip


def _rebuild(array: Array, data: bytes) -> Array:
    if array.dtype == "uint8":
        return _bytes_array(data)
    return Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=data)


def _npy_flip(array: Array, rng: np.random.Generator) -> Array:
    data = bytearray(_raw(array))
    data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    return _rebuild(array, bytes(data))


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
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fuzz_replies.json"))
    args = parser.parse_args()
    logging.getLogger("prunus").setLevel(logging.ERROR)  # one warning per rejected case otherwise
    result = run(args.cases, args.seed)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cases", "totals", "non_finite_models", "worst")}, indent=2))


if __name__ == "__main__":
    main()
