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
from prunus.server.model_store import MODEL_FILE, save_model
from prunus.simulations.recommend import open_run

TABLE = "distillation"  # OUT/distillation.{csv,json,md}


def run_distill(run_dir: Path, dims: list[int], methods: list[str], out: Path, overrides: list[str]) -> list[dict]:
    """Distil a student per method and width, save and evaluate each, and write
    the table; returns its rows (the teacher's first)."""
    code_version()
    settings, config_keys = DistillSettings.split_overrides(overrides)
    for method in methods:
        if method not in DISTILLERS:
            raise DistillError(f"--method {method}: expected one of {', '.join(DISTILLERS.names())}")
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
    rows = [_row(cfg, "teacher", "", teacher.dim, teacher_bytes, run.summary.get("model", {}).get("dense_fp32_bytes"),
                 teacher_metrics, teacher_bytes, teacher_metrics, str(run_dir), 0.0)]
    for method in methods:
        for dim in dims:
            started = time.perf_counter()
            student = distill(method, teacher, dim, settings)
            seconds = time.perf_counter() - started
            student_cfg = from_mapping({"dim": dim}, base=cfg)
            folder = out / f"{method}-d{dim}"
            saved = save_model(folder, student.params(), list(model_spec(student_cfg.model, teacher.n_items).prunable))
            metrics = score(student_cfg, student.params())
            write_summary(folder, {
                "kind": "distilled",
                "code": code_version(),
                "metrics": metrics,
                "model": saved,
                "teacher": {"run": str(run_dir), "dim": teacher.dim, "metrics": teacher_metrics,
                            "file_bytes": teacher_bytes},
                "distill": {"method": method, "dim": dim, **settings.to_dict(), "losses": list(student.losses),
                            "wall_seconds": seconds},
                "evaluated": "the student as saved, users folded in as the config says",
                "config": student_cfg.to_dict(),
            })  # fmt: skip
            rows.append(_row(student_cfg, "student", method, dim, saved["file_bytes"], saved["dense_fp32_bytes"],
                             metrics, teacher_bytes, teacher_metrics, folder.name, seconds))
    write_table(out, rows)
    return rows


def _row(cfg: Config, role: str, method: str, dim: int, served: int, dense: int | None, metrics: dict[str, float],
         teacher_bytes: int, teacher_metrics: dict[str, float], folder: str, seconds: float) -> dict[str, Any]:
    """One line of the table: a model's served bytes and metrics, and both against the teacher's."""
    hr = f"hr@{cfg.evaluation.top_k}"
    return {"model": role, "method": method, "dim": dim, "served_bytes": served, "dense_fp32_bytes": dense,
            "bytes_ratio": teacher_bytes / served, **metrics, f"{hr}_delta": metrics[hr] - teacher_metrics[hr],
            "eval_split": cfg.data.eval_split, "seconds": seconds, "folder": folder}  # fmt: skip


def write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    """distillation.csv, .json (the rows) and .md (`format_table`)."""
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"{TABLE}.csv", index=False)
    (out / f"{TABLE}.json").write_text(json.dumps({"code": code_version(), "rows": rows}, indent=2) + "\n")
    (out / f"{TABLE}.md").write_text(format_table(rows) + "\n")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: served bytes against HR@k and NDCG@k, the teacher first."""
    hr = next(key for key in rows[0] if key.startswith("hr@") and not key.endswith("_delta"))
    ndcg = "ndcg@" + hr.removeprefix("hr@")
    lines = [f"| model | method | dim | served bytes | fewer bytes | {hr} | vs teacher | {ndcg} |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['method'] or '-'} | {r['dim']} | {r['served_bytes']:,} | "
                     f"{r['bytes_ratio']:.2f}x | {r[hr]:.4f} | {r[hr + '_delta']:+.4f} | {r[ndcg]:.4f} |")  # fmt: skip
    return "\n".join(lines)
