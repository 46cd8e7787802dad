"""A sweep's results as tables, from its run folders' summaries alone.

`results_table`: one row per run: the settings that vary across the sweep,
seed, final and best metrics, bytes, ratios to the dense baseline, wall time.
`settings_table`: the same per setting, mean and spread across seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prunus.simulations.grid import RUNTIME_KEYS
from prunus.simulations.runs import Run

# config keys that never make two settings different
NOT_SETTINGS = frozenset({"seed", *RUNTIME_KEYS})
# the precision of each attack of server/leakage.py, per run (where measured)
LEAKS = ("leak_direction", "leak_norm", "leak_membership", "leak_request")
# replies the server's defences left out or scaled down, and steps refused (summary.json)
DEFENDED = ("zeroed", "row-clipped", "clipped", "weight-capped", "refused")
BYTES = ("uplink_bytes", "downlink_bytes", "request_bytes", "protocol_bytes", "dense_uplink_bytes", "dense_downlink_bytes")
# short names for the settings most sweeps vary, in labels (others keep their key)
_SHORT = {"prune-method": "", "density": "d", "error-feedback": "ef", "value-codec": "values", "downlink-codec": "down",
          "model-sparsity": "sparsity", "broadcast-rows": "rows", "negative-pool": "pool",
          "request-pad": "pad"}  # fmt: skip


class ReportError(ValueError):
    """Runs that cannot be tabulated (none complete, or incomparable)."""


def metric_names(runs: list[Run]) -> tuple[str, str]:
    """`hr@k`, `ndcg@k` for the sweep's k (one k per sweep, or the table would mix)."""
    ks = {r.summary["config"]["top-k"] for r in runs}
    if len(ks) != 1:
        raise ReportError(f"the runs use different top-k values {sorted(ks)}; report them separately")
    k = ks.pop()
    return f"hr@{k}", f"ndcg@{k}"


def commit_of(summary: dict[str, Any]) -> str:
    """The commit a run was made at, "+changes" when its tracked files differed
    from it; "unrecorded" for runs made before summaries recorded it."""
    code = summary.get("code")
    if not code:
        return "unrecorded"
    return code["commit"] + ("" if code["clean"] else "+changes")


def varied_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values differ between runs, in the config's order
    (method, density, error feedback, codecs: how a label reads best)."""
    configs = [r.summary["config"] for r in runs]
    ordered = dict.fromkeys(k for c in configs for k in c if k not in NOT_SETTINGS)
    return [k for k in ordered if len({repr(c.get(k)) for c in configs}) > 1]


def method_of(config: dict[str, Any]) -> str:
    """What a run does to its updates, for markers and legends."""
    method = config["prune-method"]
    dense = method == "none" and config["value-codec"] == "fp32"
    if method == "none":
        method = "dense" if dense else "quantised"
    return f"{method} + EF" if config["error-feedback"] and not dense else method


def label_of(row: pd.Series | dict[str, Any], varied: list[str], reference: dict[str, Any] | None) -> str:
    """A setting's short name: its method and the varied values that differ
    from the baseline's (`topk-global d=0.01 ef=False`), leaving out those that
    do nothing in it (density without pruning, error feedback on dense updates)."""
    unused = {"density"} if row["method"] in ("dense", "quantised") else set()
    if row["method"] == "dense":
        unused.add("error-feedback")
    parts = []
    for key in varied:
        if key in unused or (key != "prune-method" and reference and row[key] == reference[key]):
            continue
        short = _SHORT.get(key, key)
        if key == "prune-method" and row[key] == "none":
            parts.append(row["method"])  # "dense" or "quantised" reads better than "none"
        else:
            parts.append(f"{short}={row[key]}" if short else str(row[key]))
    return " ".join(parts) or "base"


@dataclass(frozen=True)
class Tables:
    results: pd.DataFrame  # one row per run
    settings: pd.DataFrame  # one row per setting: mean and std across seeds
    varied: list[str]
    hr: str  # "hr@10"
    ndcg: str


def make_tables(runs: list[Run]) -> Tables:
    if not runs:
        raise ReportError("no complete runs to tabulate")
    hr, ndcg = metric_names(runs)
    varied = varied_keys(runs)
    results = results_table(runs, varied, hr, ndcg)
    return Tables(results, settings_table(results, varied, hr, ndcg), varied, hr, ndcg)


def figure_columns(hr: str, ndcg: str, results: pd.DataFrame | None = None) -> list[str]:
    """The numeric result columns (what a setting averages over its seeds);
    the attacks' precisions where the runs measured leakage."""
    leaks = [c for c in LEAKS if results is not None and c in results]
    sent = [c for c in BYTES if c != "protocol_bytes" or (results is not None and c in results)]
    return [hr, f"{hr}_best", ndcg, f"{ndcg}_best", *sent, "total_bytes", f"{hr}_retained", f"{ndcg}_retained",
            "uplink_reduction", "downlink_reduction", "total_reduction", "wall_seconds", *leaks]  # fmt: skip


def results_table(runs: list[Run], varied: list[str], hr: str, ndcg: str) -> pd.DataFrame:
    rows = []
    for run in runs:
        summary, config = run.summary, run.summary["config"]
        row: dict[str, Any] = {"run": run.name, "setting": run.point["setting"], "method": method_of(config)}
        row |= {key: config[key] for key in varied}
        row |= {"seed": config["seed"], "baseline": bool(run.point["baseline"])}
        for metric in (hr, ndcg):
            row[metric] = summary["metrics"].get(metric, np.nan)
            row[f"{metric}_best"] = summary["best"].get(metric, np.nan)
        row |= {key: summary["comm"].get(key, 0) for key in BYTES}  # runs before row requests have none
        row["total_bytes"] = row["uplink_bytes"] + row["downlink_bytes"] + row["request_bytes"] + row["protocol_bytes"]
        row |= {"failures": summary.get("failures", 0), "rejected": summary.get("rejected", 0)}
        row |= {key: summary.get(key, 0) for key in DEFENDED}  # what the server's defences did (runs before: none)
        row |= {"rounds": summary["rounds"], "wall_seconds": summary["wall_seconds"], "folder": f"runs/{run.name}"}
        row["commit"] = commit_of(summary)
        if "privacy" in summary:  # the attacks' precision (server/leakage.py), where measured
            row |= {column: summary["privacy"].get(f"leak-{column[5:]}-precision", np.nan) for column in LEAKS}
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table["protocol_bytes"].any():  # a column only where secure aggregation ran
        table = table.drop(columns="protocol_bytes")
    table = table.drop(columns=[key for key in DEFENDED if not table[key].any()])  # only where a defence acted
    baseline = next((r.summary["config"] for r in runs if r.point["baseline"]), None)
    table.insert(3, "label", [label_of(row, varied, baseline) for _, row in table.iterrows()])
    return _with_ratios(table, hr, ndcg)


def _with_ratios(table: pd.DataFrame, hr: str, ndcg: str) -> pd.DataFrame:
    """Quality kept (run / baseline) and bytes saved (baseline / run) against
    the baseline run of the same seed, else the mean of the baseline's seeds."""
    baseline = table[table["baseline"]]
    ratios = {f"{hr}_retained": (hr, False), f"{ndcg}_retained": (ndcg, False),
              "uplink_reduction": ("uplink_bytes", True), "downlink_reduction": ("downlink_bytes", True),
              "total_reduction": ("total_bytes", True)}  # fmt: skip
    for column, (source, inverse) in ratios.items():
        by_seed = baseline.set_index("seed")[source]
        reference = table["seed"].map(by_seed).fillna(by_seed.mean() if len(by_seed) else np.nan)
        table[column] = reference / table[source] if inverse else table[source] / reference
    return table


def settings_table(results: pd.DataFrame, varied: list[str], hr: str, ndcg: str) -> pd.DataFrame:
    """Per setting: its identifying columns, n seeds, and mean and std of every figure."""
    identity = list(dict.fromkeys(["method", "label", *varied, "baseline", "rounds"]))
    grouped = results.groupby("setting", sort=True)
    table = grouped[identity].first().reset_index()
    table["n"] = grouped.size().to_numpy()
    for column in figure_columns(hr, ndcg, results):
        table[f"{column}_mean"] = grouped[column].mean().to_numpy()
        table[f"{column}_std"] = grouped[column].std().to_numpy()
    return table


def pareto(settings: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The settings no other beats on both counts (fewer bytes, higher quality), by bytes."""
    ordered = settings.sort_values([x, y], ascending=[True, False], kind="stable")
    keep, best = [], -np.inf
    for index, value in ordered[y].items():
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def chosen_runs(tables: Tables, labels: list[str] | None) -> pd.DataFrame:
    """The first-seed run of each setting named by label (in that order), or
    without labels of each method's setting with the best mean final HR@k."""
    settings = tables.settings
    if labels is None:
        ranked = settings.sort_values(f"{tables.hr}_mean", ascending=False, kind="stable")
        chosen = list(ranked.drop_duplicates("method")["setting"])
    else:
        unknown = [label for label in labels if label not in set(settings["label"])]
        if unknown:
            raise ReportError(f"--curves: no setting is labelled {unknown}; the labels are {list(settings['label'])}")
        chosen = [s for label in labels for s in settings.loc[settings["label"] == label, "setting"]]
    first_seed = tables.results.sort_values("seed", kind="stable").drop_duplicates("setting")
    return first_seed.set_index("setting").loc[chosen].reset_index()
