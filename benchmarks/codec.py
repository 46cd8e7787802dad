"""Benchmark the sparse wire format's index codecs (common/codec.py).

    python benchmarks/codec.py [--quick] [--out benchmarks/results/codec.json]

For n in (237184, 10_000_000) and density in (0.001, 0.01, 0.1), uniformly
random positions (seeded) and fp32 values: per index codec and "auto", the
index-stream bits per non-zero, the information-theoretic floor
log2(C(n,k))/k, their ratio, encode/decode throughput (M non-zeros/s, median
of the repeats; encode/decode include the fp32 value stream) and the decode
wall time.  Prints a table and writes JSON with machine info and the command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from prunus.common.codec import INDEX_CODECS, decode, encode, read_header  # noqa: E402

SIZES = (237_184, 10_000_000)
DENSITIES = (0.001, 0.01, 0.1)
CODECS = (*sorted(INDEX_CODECS), "auto")
RATIO_TARGET = 1.10
DECODE_TARGET_S = 1.0


def floor_bits(n: int, k: int) -> float:
    """log2(C(n, k)) / k via lgamma."""
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2) / k


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "cpu": cpu, "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def run(repeats: int, seed: int) -> list[dict]:
    rows = []
    for n in SIZES:
        for density in DENSITIES:
            k = int(round(n * density))
            rng = np.random.default_rng([seed, n, k])
            idx = np.sort(rng.choice(n, size=k, replace=False))
            vals = rng.standard_normal(k).astype(np.float32)
            fl = floor_bits(n, k)
            for codec in CODECS:
                t_enc, payload = timed(lambda: encode(idx, vals, (n,), index_codec=codec),
                                       repeats)
                t_dec, out = timed(lambda: decode(payload), repeats)
                assert np.array_equal(out[0], idx) and np.array_equal(out[1], vals)
                info = read_header(payload)
                bits = info.index_nbytes * 8 / k
                rows.append({
                    "n": n, "density": density, "nnz": k, "codec": codec,
                    "chosen": info.index_codec, "param": info.index_param,
                    "index_bits_per_nz": bits, "floor_bits_per_nz": fl,
                    "ratio_to_floor": bits / fl,
                    "payload_bytes": len(payload), "header_bytes": info.header_nbytes,
                    "encode_mnz_s": k / t_enc / 1e6, "decode_mnz_s": k / t_dec / 1e6,
                    "encode_s": t_enc, "decode_s": t_dec,
                })
                print(fmt_row(rows[-1]), flush=True)
    return rows


HEAD = (f"{'n':>10} {'dens':>6} {'nnz':>9} {'codec':<13} {'param':>5} {'bits/nz':>8} "
        f"{'floor':>7} {'ratio':>6} {'enc M/s':>8} {'dec M/s':>8} {'dec ms':>8}")


def fmt_row(r: dict) -> str:
    name = r["codec"] if r["codec"] != "auto" else f"auto>{r['chosen'][:4]}"
    return (f"{r['n']:>10} {r['density']:>6} {r['nnz']:>9} {name:<13} {r['param']:>5} "
            f"{r['index_bits_per_nz']:>8.3f} {r['floor_bits_per_nz']:>7.3f} "
            f"{r['ratio_to_floor']:>6.3f} {r['encode_mnz_s']:>8.2f} {r['decode_mnz_s']:>8.2f} "
            f"{r['decode_s'] * 1e3:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat instead of 5")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "codec.json"))
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)

    print(HEAD)
    rows = run(repeats, args.seed)
    auto = [r for r in rows if r["codec"] == "auto"]
    worst = max(auto, key=lambda r: r["ratio_to_floor"])
    dec = next(r for r in auto if r["n"] == 10_000_000 and r["density"] == 0.01)
    checks = {
        "auto_max_ratio_to_floor": worst["ratio_to_floor"],
        "auto_ratio_ok": worst["ratio_to_floor"] <= RATIO_TARGET,
        "decode_10M_1pct_s": dec["decode_s"],
        "decode_10M_1pct_ok": dec["decode_s"] < DECODE_TARGET_S,
    }
    print(f"\nauto: worst ratio to floor {worst['ratio_to_floor']:.3f} "
          f"(target <= {RATIO_TARGET}) -> {'OK' if checks['auto_ratio_ok'] else 'FAIL'}")
    print(f"decode 10M @ 1% (auto, indices + fp32 values): {dec['decode_s'] * 1e3:.1f} ms "
          f"(target < {DECODE_TARGET_S} s) -> {'OK' if checks['decode_10M_1pct_ok'] else 'FAIL'}")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeats": repeats, "seed": args.seed, "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checks": checks, "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
