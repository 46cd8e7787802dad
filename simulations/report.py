"""`prunus report DIR`: tables, plots and report.md of a sweep from its run
folders alone, so a sweep can be re-reported (or reported while it is still
running) without its grid file and without re-running anything."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from prunus.common.config import Config
from prunus.simulations.plots import plot_bytes, plot_curves, plot_frontier, plot_leakage
from prunus.simulations.runs import read_runs
from prunus.simulations.table import DEFENDED, NOT_SETTINGS, Tables, chosen_runs, make_tables, pareto


def write_report(sweep: Path, curves: list[str] | None = None) -> Path:
    """Write results.{csv,parquet}, settings.{csv,parquet}, the plots and report.md.
    `curves` names the settings (by label) whose learning curves to draw; by
    default, the best setting of each method."""
    runs, missing = read_runs(sweep)
    tables = make_tables(runs)
    chosen = chosen_runs(tables, curves)
    for name, frame in (("results", tables.results), ("settings", tables.settings)):
        frame.to_csv(sweep / f"{name}.csv", index=False)
        frame.to_parquet(sweep / f"{name}.parquet", index=False)
    plot_frontier(tables, sweep / "frontier.png")
    plot_frontier(tables, sweep / "frontier-total.png", "total")
    plot_curves(tables, chosen, sweep, sweep / "curves.png")
    plot_bytes(tables, sweep, sweep / "bytes.png")
    if "leak_direction_mean" in tables.settings:
        plot_leakage(tables, sweep / "leakage.png")
    fixed = _fixed_settings(runs[0].summary["config"], tables.varied)
    path = sweep / "report.md"
    path.write_text(render(sweep.name, tables, fixed, missing, curves is not None))
    return path


def render(title: str, tables: Tables, fixed: dict[str, Any], missing: list[str], chosen: bool = False) -> str:
    """report.md: what was run, the frontier, the best setting per byte budget, every setting and run."""
    hr, ndcg, settings, results = tables.hr, tables.ndcg, tables.settings, tables.results
    base = settings[settings["baseline"]]
    lines = [f"# Sweep `{title}`", ""]
    lines.append(f"{len(results)} runs of {len(settings)} settings, seeds "
                 f"{', '.join(str(s) for s in sorted(results['seed'].unique()))}; "
                 f"baseline: {base['label'].iloc[0] if len(base) else 'none named'}. "
                 f"Varied: {', '.join(f'`{k}`' for k in tables.varied) or 'nothing'}.")  # fmt: skip
    commits = results["commit"].value_counts(sort=False)
    lines.append("Code: " + ", ".join(f"`{c}` ({n} runs)" for c, n in commits.items()) + ".")
    if fixed:
        lines.append("Fixed (differing from the defaults): " + ", ".join(f"`{k} = {v!r}`" for k, v in fixed.items()) + ".")
    if missing:
        lines.append(f"Not complete, so not in the tables: {', '.join(f'`{m}`' for m in missing)}.")
    lossy = results[(results["failures"] > 0) | (results["rejected"] > 0)]
    if len(lossy):  # their figures are those of fewer clients than asked for
        lines.append("Runs that lost client replies (failed / rejected), see their `clients.csv`: " + ", ".join(
            f"`{r['run']}` ({r['failures']} / {r['rejected']})" for _, r in lossy.iterrows()) + ".")  # fmt: skip
    defended = [key for key in DEFENDED if key in results]
    if defended:  # the replies each defence left out or scaled down (its reasons: clients.csv)
        acted = results[(results[defended] > 0).any(axis=1)]
        lines.append(f"Runs where the server's defences acted ({' / '.join(defended)}), see their `clients.csv`: "
                     + ", ".join(f"`{r['run']}` ({' / '.join(str(r[k]) for k in defended)})"
                                 for _, r in acted.iterrows()) + ".")
    lines += ["", f"Figures are means over seeds (± standard deviation); {hr.upper()} and {ndcg.upper()} are those of "
              "the last round; bytes are totals over the run; `x fewer` is the baseline's bytes over the "
              "setting's. A setting's label names its method and the values that differ from the baseline's "
              "(`d` density, `ef` error feedback, `values` value codec, `down` downlink codec, "
              "`sparsity` the global model's, `rows` which item rows a broadcast carries, `pool` / `pad` the "
              "negative pool and padding of a row request). "
              "Regenerate with `prunus report DIR`.", ""]  # fmt: skip
    lines += ["## Quality against total bytes", "", "![frontier, total bytes](frontier-total.png)", "",
              "Every message of the protocol, both directions (uplink, downlink and row requests): what a "
              "deployment pays. The Pareto frontier (no other setting has at most as many total bytes and a "
              f"higher mean {hr.upper()}):", ""]  # fmt: skip
    lines += _settings_rows(tables, pareto(settings, "total_bytes_mean", f"{hr}_mean"))
    lines += ["", "## Best setting per total budget", ""]
    lines += _budget_rows(tables, "total")
    if "leak_direction_mean" in settings:
        lines += ["", "## Quality, bytes and leakage", "", "![leakage](leakage.png)", "",
                  "What an honest-but-curious server names of each sampled reply's items (`server/leakage.py`): "
                  "the precision of each attack's guess, averaged over the sampled replies of every round "
                  "(`direction`: the top |P| rows along the update's main direction; `norm`: by update norm; "
                  "`membership`: every row the update touches; `request`: every row a client asked for).", ""]
        lines += _leakage_rows(tables)
    lines += ["", "## Quality against uplink bytes", "", "![frontier](frontier.png)", "",
              "The clients' replies alone. The Pareto frontier on uplink bytes:", ""]
    lines += _settings_rows(tables, pareto(settings, "uplink_bytes_mean", f"{hr}_mean"))
    lines += ["", "## Best setting per uplink budget", ""]
    lines += _budget_rows(tables, "uplink")
    lines += ["", "## Learning curves and bytes per round", "",
              f"{hr.upper()} against cumulative uplink bytes for "
              f"{'the chosen settings' if chosen else 'the best setting of each method'} (first seed):",
              "", "![curves](curves.png)", "", "![bytes per round](bytes.png)", ""]  # fmt: skip
    lines += ["## All settings", ""] + _settings_rows(tables, settings)
    lines += ["", "## All runs", "", "Also in `results.csv` / `results.parquet` (one row per run) and "
              "`settings.csv` / `settings.parquet` (per setting).", ""]  # fmt: skip
    lines += _run_rows(tables)
    return "\n".join(lines) + "\n"


def _settings_rows(tables: Tables, settings: pd.DataFrame) -> list[str]:
    hr, ndcg = tables.hr, tables.ndcg
    header = ["setting", "n", f"{hr.upper()}", f"{ndcg.upper()}", f"best {hr.upper()}", "total bytes",
              "x fewer total", "uplink bytes", "x fewer up", "downlink bytes", "x fewer down", f"{hr.upper()} kept",
              "wall s"]  # fmt: skip
    rows = [
        [row["label"] + (" **(baseline)**" if row["baseline"] else ""), row["n"],
         _spread(row, hr, 4), _spread(row, ndcg, 4), _spread(row, f"{hr}_best", 4),
         _bytes(row["total_bytes_mean"]), _times(row["total_reduction_mean"]),
         _bytes(row["uplink_bytes_mean"]), _times(row["uplink_reduction_mean"]),
         _bytes(row["downlink_bytes_mean"]), _times(row["downlink_reduction_mean"]),
         _percent(row[f"{hr}_retained_mean"]), f"{row['wall_seconds_mean']:.0f}"]  # fmt: skip
        for _, row in settings.iterrows()
    ]
    return markdown_table(header, rows)


_SHORT = {"total": "total", "uplink": "up"}


def _leakage_rows(tables: Tables) -> list[str]:
    hr = tables.hr
    header = ["setting", "n", hr.upper(), "total bytes", "x fewer total", "direction", "norm", "membership", "request"]
    rows = [
        [row["label"] + (" **(baseline)**" if row["baseline"] else ""), row["n"], _spread(row, hr, 4),
         _bytes(row["total_bytes_mean"]), _times(row["total_reduction_mean"]),
         *(_share(row.get(f"leak_{attack}_mean", np.nan)) for attack in ("direction", "norm", "membership", "request"))]
        for _, row in tables.settings.iterrows()
    ]  # fmt: skip
    return markdown_table(header, rows)


def _share(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "-"


def _budget_rows(tables: Tables, what: str) -> list[str]:
    """For each round budget of `what` bytes ("total" or "uplink"; 1-2-5 steps
    from the cheapest setting to the dearest): the best mean HR@k among the
    settings within it."""
    hr, settings = tables.hr, tables.settings
    spent = settings[f"{what}_bytes_mean"]
    rows = []
    for budget in budgets(spent.min(), spent.max()):
        within = settings[spent <= budget]
        best = within.loc[within[f"{hr}_mean"].idxmax()]
        rows.append([f"<= {_bytes(budget)}", best["label"], _spread(best, hr, 4), _bytes(best[f"{what}_bytes_mean"]),
                     _times(best[f"{what}_reduction_mean"]), _percent(best[f"{hr}_retained_mean"])])  # fmt: skip
    header = [f"{what} budget", "best setting", hr.upper(), f"{what} bytes", f"x fewer {_SHORT[what]}",
              f"{hr.upper()} kept"]  # fmt: skip
    return markdown_table(header, rows)


def budgets(low: float, high: float) -> list[float]:
    """Round budgets (1, 2, 5 x 10^k): from the first that admits `low` to the first that admits `high`."""
    low, high = max(low, 1.0), max(high, 1.0)
    steps = [m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1) for m in (1, 2, 5)]
    first = next(i for i, b in enumerate(steps) if b >= low)
    last = next(i for i, b in enumerate(steps) if b >= high)
    return steps[first : last + 1]


def _run_rows(tables: Tables) -> list[str]:
    hr, ndcg = tables.hr, tables.ndcg
    header = ["run", "seed", hr.upper(), ndcg.upper(), f"best {hr.upper()}", "total bytes", "uplink bytes",
              "downlink bytes", "request bytes", "x fewer total", "x fewer up", "x fewer down", "wall s"]  # fmt: skip
    rows = [
        [f"[{row['run']}]({row['folder']})", row["seed"], f"{row[hr]:.4f}", f"{row[ndcg]:.4f}",
         f"{row[f'{hr}_best']:.4f}", f"{row['total_bytes']:,}", f"{row['uplink_bytes']:,}",
         f"{row['downlink_bytes']:,}", f"{row['request_bytes']:,}", _times(row["total_reduction"]),
         _times(row["uplink_reduction"]), _times(row["downlink_reduction"]), f"{row['wall_seconds']:.0f}"]  # fmt: skip
        for _, row in tables.results.iterrows()
    ]
    return markdown_table(header, rows)


def markdown_table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _fixed_settings(config: dict[str, Any], varied: list[str]) -> dict[str, Any]:
    defaults = Config().to_dict()
    skip = {*varied, *NOT_SETTINGS}
    return {k: v for k, v in config.items() if k not in skip and v != defaults.get(k)}


def _spread(row: pd.Series, column: str, digits: int) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if np.isfinite(std) else "")


def _bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if np.isfinite(ratio) else "-"


def _percent(ratio: float) -> str:
    return f"{100 * ratio:.1f}%" if np.isfinite(ratio) else "-"
