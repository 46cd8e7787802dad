"""MF and NeuMF with client actors on CUDA against the same runs on the CPU: where tensors live, metrics, time.

For each model, two `prunus simulate` runs of the same seed on Flower's
Simulation Engine: one on the CPU (CUDA hidden from the run,
CUDA_VISIBLE_DEVICES="", so Ray, its actors and the server see no GPU) and one
where every client actor asks Ray for `--gpus-per-client` of a GPU (0.25: four
actors share one; the server evaluates on the GPU too). Checks, each a failure
(exit 1, after the results are written) where it does not hold:

- every train and evaluate reply of the GPU run says it ran on CUDA and held
  memory there (clients.csv's `cuda_device` and `cuda_peak_bytes`, read from
  the client actor's CUDA allocator, so a step that stayed on the CPU shows 0
  bytes), and no reply of the CPU run says anything of CUDA;
- the final HR@10 and NDCG@10 of the two runs agree within `--tolerance` (the
  GPU sums floats in another order: equal to the last bit is not expected).

Times: each run's wall time (Ray's start included) and its median round
(round 1, the actors' start, left out). MF runs its PyTorch step
(`local-trainer = "torch"`): its default step is the closed form in numpy,
which no GPU runs. The data: the embedded synthetic set, 8 IID silos, unless
`--set` says otherwise (`--set dataset=ml-100k --set data-dir=DIR`).
Without CUDA it says why and exits 0, writing nothing.

    python benchmarks/gpu_check.py [--rounds 3] [--gpus-per-client 0.25] [--tolerance 0.02]
                                   [--set KEY=VALUE]... [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mf": ["model=mf", "local-trainer=torch"], "neumf": ["model=neumf"]}
DATA = ["dataset=synthetic", "partition=iid", "num-silos=8", "clients-per-round=8", "federated-eval-clients=8",
        "dim=32", "seed=0", "client-num-cpus=1"]  # fmt: skip
METRICS = ("hr@10", "ndcg@10")
ON_DEVICE = ("train", "evaluate")  # the kinds of reply whose work runs the model


def cuda_missing() -> str | None:
    """Why this machine cannot run the check, or None where it can."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build (no CUDA in it); run it where a CUDA build of torch sees a GPU"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device on this machine"
    return None


def device_problems(rows: list[dict[str, str]], on_gpu: bool) -> list[str]:
    """What contradicts the run's device in its clients.csv rows: on the GPU, an
    accepted train or evaluate reply that did not compute on CUDA; on the CPU,
    any reply that says it did. Failed replies say nothing of where they ran."""
    problems = []
    for row in rows:
        device, peak = row["cuda_device"], int(row["cuda_peak_bytes"])
        where = f"round {row['round']} {row['kind']} partition {row['partition']}"
        if on_gpu and row["status"] == "accepted" and row["kind"] in ON_DEVICE:
            if not device.startswith("cuda") or peak <= 0:
                problems.append(f"{where}: device {device or 'cpu'!r}, {peak} bytes on CUDA")
        elif not on_gpu and (device or peak):
            problems.append(f"{where}: says {device!r}, {peak} bytes in a run without CUDA")
    return problems


def metric_gaps(cpu: dict[str, float], gpu: dict[str, float], tolerance: float) -> tuple[dict[str, float], list[str]]:
    """|GPU - CPU| of each final metric, and the gaps above `tolerance` (a metric missing is one)."""
    gaps, problems = {}, []
    for name in METRICS:
        if name not in cpu or name not in gpu:
            problems.append(f"{name} missing from a run's summary")
            continue
        gaps[name] = abs(gpu[name] - cpu[name])
        if not gaps[name] <= tolerance:  # a NaN fails too
            problems.append(f"{name}: GPU {gpu[name]:.4f} against CPU {cpu[name]:.4f}, gap above {tolerance}")
    return gaps, problems


def _simulate(settings: list[str], out: Path, cuda: bool) -> dict:
    """One `prunus simulate` run in a subprocess; its summary, times and clients.csv rows."""
    env = dict(os.environ) if cuda else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "prunus.simulations.cli", "simulate", "--out", str(out),
           *(arg for s in settings for arg in ("--set", s))]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "rounds.csv", newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if int(row["round"]) >= 2]
    with open(out / "clients.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    peaks = [int(row["cuda_peak_bytes"]) for row in rows if row["cuda_device"]]
    return {"wall_s": wall, "median_round_s": statistics.median(seconds) if seconds else float("nan"),
            "metrics": {name: summary["metrics"][name] for name in METRICS if name in summary["metrics"]},
            "total_bytes": summary["comm"]["total_bytes"], "replies": len(rows),
            "replies_on_cuda": len(peaks), "max_cuda_peak_bytes": max(peaks, default=0), "rows": rows}


def check_model(name: str, settings: list[str], gpus_per_client: float, tolerance: float, tmp: Path) -> dict:
    """The CPU run and the GPU run of one model, compared."""
    cpu = _simulate([*settings, "client-num-gpus=0"], tmp / f"{name}-cpu", cuda=False)
    gpu = _simulate([*settings, f"client-num-gpus={gpus_per_client}"], tmp / f"{name}-gpu", cuda=True)
    gaps, problems = metric_gaps(cpu["metrics"], gpu["metrics"], tolerance)
    problems = device_problems(cpu.pop("rows"), False) + device_problems(gpu.pop("rows"), True) + problems
    speedup = cpu["median_round_s"] / gpu["median_round_s"] if gpu["median_round_s"] > 0 else float("nan")
    return {"cpu": cpu, "gpu": gpu, "metric_gaps": gaps, "round_speedup": speedup, "problems": problems[:20],
            "passed": not problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpus-per-client", type=float, default=0.25, help="Ray's GPU share per client actor")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest |GPU - CPU| of a final metric")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (both runs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    args = parser.parse_args()
    if not 0 < args.gpus_per_client <= 1 or args.rounds < 2:
        raise SystemExit("gpu_check: --gpus-per-client must be in (0, 1] and --rounds at least 2 (round 1 is the start)")
    missing = cuda_missing()
    if missing:
        print(f"gpu_check: skipped: {missing}")
        return
    import torch

    base = [*DATA, f"rounds={args.rounds}", f"eval-every={args.rounds}", *args.set]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in MODELS.items():
            results[name] = check_model(name, [*base, *model], args.gpus_per_client, args.tolerance, Path(tmp))
            r = results[name]
            print(f"{name:>6}: round {r['cpu']['median_round_s']:.2f} s on CPU, {r['gpu']['median_round_s']:.2f} s on "
                  f"GPU; {r['gpu']['replies_on_cuda']}/{r['gpu']['replies']} replies on CUDA; gaps "
                  + ", ".join(f"{k} {v:.4f}" for k, v in r["metric_gaps"].items())
                  + ("" if r["passed"] else "; FAILED: " + "; ".join(r["problems"][:3])), flush=True)
    report = {"command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]), "settings": base,
              "models": {name: MODELS[name] for name in MODELS}, "results": results,
              "passed": all(r["passed"] for r in results.values()), "machine": platform.platform(),
              "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0)}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        raise SystemExit(f"gpu_check: FAILED (details in {args.out})")
    print(f"gpu_check: passed on {report['gpu']}; results in {args.out}")


if __name__ == "__main__":
    main()
