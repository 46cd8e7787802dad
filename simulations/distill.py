"""`prunus distill`: compact MF students of a run's model, made on the server alone.

Each student (a distiller of `common.distill` at a width) is saved as a run
folder of its own, `OUT/<method>-d<dim>/` with `model.npz` and a
`summary.json` whose config is the teacher's with the student's `dim`, so
`prunus evaluate` and `prunus recommend` serve it as they serve any run. The
distillers see the teacher's item side only; the data split is read to
evaluate the teacher and the students, as central evaluation does, and
never reaches a distiller. `OUT/distillation.{csv,json,md}` set each
student's served bytes (its `model.npz`) and HR@k against the teacher's,
both measured on the same split now.

Each student is saved in every served codec asked for (`server.model_store`;
`OUT/<method>-d<dim>-<codec>/` for one other than fp32), and the teacher is
re-encoded in each such codec (`OUT/teacher-<codec>/`), so the table sets
apart what the width saves and what quantisation alone does. Every model is
scored as loaded back from its `model.npz`, as it is served.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from prunus.common.config import Config, from_mapping, parse_overrides
from prunus.common.datasets import load_split
from prunus.common.distill import DISTILLERS, DistillError, DistillSettings, Teacher
from prunus.common.distill.base import check_width, distill
from prunus.common.models import model_spec
from prunus.common.params import Params
from prunus.common.results import code_version, write_summary
from prunus.server.evaluation import CentralEvaluator
from prunus.server.model_store import MODEL_FILE, SERVED_CODECS, load_model, save_model
from prunus.simulations.recommend import open_run

TABLE = "distillation"  # OUT/distillation.{csv,json,md}


def run_distill(run_dir: Path, dims: list[int], methods: list[str], out: Path, overrides: list[str],
                codecs: list[str] | None = None) -> list[dict]:
    """Distil a student per method and width, save each in every served codec
    of `codecs` (fp32 by default), the teacher re-encoded in each other one,
    evaluate each as loaded back, and write the table; returns its rows (the
    teacher's first)."""
    code_version()
    codecs = codecs or ["fp32"]
    settings, config_keys = DistillSettings.split_overrides(overrides)
    for method in methods:
        if method not in DISTILLERS:
            raise DistillError(f"--method {method}: expected one of {', '.join(DISTILLERS.names())}")
    for codec in codecs:
        if codec not in SERVED_CODECS:
            raise DistillError(f"--served-codec {codec}: expected one of {', '.join(SERVED_CODECS)}")
    run = open_run(run_dir)
    cfg = from_mapping(parse_overrides(config_keys), base=run.cfg, source="--set") if config_keys else run.cfg
    split = load_split(cfg)  # to evaluate only: no distiller reads it
    teacher = Teacher.of_run(run.params, cfg)
    for dim in dims:  # before any work
        check_width(teacher, dim, settings)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def score(model_cfg: Config, params: Params) -> dict[str, float]:
        metrics = CentralEvaluator(model_cfg, split, device)(params, model_cfg.federation.rounds)
        return {name: value for name, value in metrics.items() if name != "eval-users"}

    teacher_bytes = (run_dir / MODEL_FILE).stat().st_size
    teacher_metrics = score(cfg, run.params)
    teacher_info = {"run": str(run_dir), "dim": teacher.dim, "metrics": teacher_metrics, "file_bytes": teacher_bytes}

    def serve(folder: Path, model_cfg: Config, params: Params, codec: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Save `params` in `codec` as a run folder, score it as loaded back; the summary."""
        prunable = list(model_spec(model_cfg.model, teacher.n_items).prunable)
        saved = save_model(folder, params, prunable, codec)
        summary = {"code": code_version(), "metrics": score(model_cfg, load_model(folder / MODEL_FILE)),
                   "model": saved, **summary, "teacher": teacher_info,
                   "evaluated": "the model as loaded from its model.npz, users folded in as the config says",
                   "config": model_cfg.to_dict()}  # fmt: skip
        write_summary(folder, summary)
        return summary

    reference = (teacher_bytes, teacher_metrics)
    rows = [_row(cfg, "teacher", "", "fp32", teacher_bytes, run.summary.get("model", {}).get("dense_fp32_bytes"),
                 teacher_metrics, reference, str(run_dir), 0.0)]
    for codec in codecs:
        if codec != "fp32":
            folder = out / f"teacher-{codec}"
            done = serve(folder, cfg, run.params, codec, {"kind": "re-encoded"})
            rows.append(_row(cfg, "teacher", "", codec, done["model"]["file_bytes"], done["model"]["dense_fp32_bytes"],
                             done["metrics"], reference, folder.name, 0.0))
    for method in methods:
        for dim in dims:
            started = time.perf_counter()
            student = distill(method, teacher, dim, settings)
            seconds = time.perf_counter() - started
            student_cfg = from_mapping({"dim": dim}, base=cfg)
            info = {"method": method, "dim": dim, **settings.to_dict(), "losses": list(student.losses),
                    "wall_seconds": seconds}  # fmt: skip
            for codec in codecs:
                folder = out / (f"{method}-d{dim}" if codec == "fp32" else f"{method}-d{dim}-{codec}")
                done = serve(folder, student_cfg, student.params(), codec, {"kind": "distilled", "distill": info})
                rows.append(_row(student_cfg, "student", method, codec, done["model"]["file_bytes"],
                                 done["model"]["dense_fp32_bytes"], done["metrics"], reference, folder.name, seconds))
    write_table(out, rows)
    return rows


def _row(cfg: Config, role: str, method: str, codec: str, served: int, dense: int | None, metrics: dict[str, float],
         reference: tuple[int, dict[str, float]], folder: str, seconds: float) -> dict[str, Any]:
    """One line of the table: a model's served bytes and metrics, and both against
    the `reference` (the teacher's fp32 file bytes and metrics)."""
    hr = f"hr@{cfg.evaluation.top_k}"
    teacher_bytes, teacher_metrics = reference
    return {"model": role, "method": method, "dim": cfg.model.dim, "codec": codec, "served_bytes": served,
            "dense_fp32_bytes": dense, "bytes_ratio": teacher_bytes / served, **metrics,
            f"{hr}_delta": metrics[hr] - teacher_metrics[hr], "eval_split": cfg.data.eval_split, "seconds": seconds,
            "folder": folder}  # fmt: skip


def write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    """distillation.csv, .json (the rows) and .md (`format_table`)."""
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"{TABLE}.csv", index=False)
    (out / f"{TABLE}.json").write_text(json.dumps({"code": code_version(), "rows": rows}, indent=2) + "\n")
    (out / f"{TABLE}.md").write_text(format_table(rows) + "\n")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: served bytes (and codec) against HR@k and NDCG@k, the teacher first."""
    hr = next(key for key in rows[0] if key.startswith("hr@") and not key.endswith("_delta"))
    ndcg = "ndcg@" + hr.removeprefix("hr@")
    lines = [f"| model | method | dim | codec | served bytes | fewer bytes | {hr} | vs teacher | {ndcg} |",
             "|---|---|--:|---|--:|--:|--:|--:|--:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['method'] or '-'} | {r['dim']} | {r['codec']} | {r['served_bytes']:,} | "
                     f"{r['bytes_ratio']:.2f}x | {r[hr]:.4f} | {r[hr + '_delta']:+.4f} | {r[ndcg]:.4f} |")  # fmt: skip
    return "\n".join(lines)
