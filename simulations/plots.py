"""A sweep's figures, meant to read in print as on screen: large type, a
distinct marker (not only a colour) per method, axes labelled with units."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from prunus.simulations.table import Tables, pareto  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "8")
LINES = ("-", "--", ":", "-.")
STYLE = {"font.size": 13, "axes.titlesize": 14, "axes.labelsize": 14, "legend.fontsize": 11,
         "lines.linewidth": 2, "lines.markersize": 9, "axes.grid": True, "grid.alpha": 0.3}  # fmt: skip


def markers(tables: Tables) -> dict[str, tuple[str, str]]:
    """Marker and colour per method, in order of first appearance (stable across plots)."""
    methods = list(dict.fromkeys(tables.settings["method"]))
    colours = plt.get_cmap("tab10").colors
    return {m: (MARKERS[i % len(MARKERS)], colours[i % len(colours)]) for i, m in enumerate(methods)}


@contextmanager
def _figure(path: Path, size: tuple[float, float]) -> Iterator[plt.Axes]:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=size, dpi=150)
        yield ax
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_frontier(tables: Tables, path: Path, direction: str = "uplink") -> Path:
    """Final HR@k (mean over seeds, bar = std) against bytes per setting:
    `uplink` (what pruning saves) or `total` (up and down, what a deployment pays)."""
    hr, settings, style = tables.hr, tables.settings, markers(tables)
    x, y = f"{direction}_bytes_mean", f"{hr}_mean"
    with _figure(path, (13, 6)) as ax:
        for method, group in settings.groupby("method", sort=False):
            marker, colour = style[method]
            ax.errorbar(group[x], group[y], yerr=group[f"{hr}_std"].fillna(0), marker=marker, color=colour,
                        linestyle="none", capsize=3, label=method)  # fmt: skip
        front = pareto(settings, x, y)
        ax.step(front[x], front[y], where="post", color="black", alpha=0.5, linewidth=1.5, label="Pareto frontier")
        # frontier points numbered, their labels listed in a legend: written beside
        # a crowded frontier, labels would hide the neighbouring points
        keys = []
        for number, (_, row) in enumerate(front.iterrows(), start=1):
            ax.annotate(str(number), (row[x], row[y]), xytext=(-7, 7), textcoords="offset points", ha="right",
                        fontsize=10, fontweight="bold")  # fmt: skip
            keys.append(f"{number}  {row['label']}")
        base = settings[settings["baseline"]]
        if len(base):
            ax.scatter(base[x], base[y], marker="*", s=500, facecolor="none", edgecolor="black", linewidth=1.5,
                       zorder=5, label="baseline")  # fmt: skip
            ax.axhline(float(base[y].iloc[0]), color="grey", linestyle=":", linewidth=1.5)
        _log_x(ax, f"{'uplink' if direction == 'uplink' else 'uplink + downlink'} bytes over the whole run",
               f"{hr.upper()} at the last round")  # fmt: skip
        # both legends right of the axes, where they hide no point whatever the sweep
        ax.add_artist(ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0)))
        blank = [Line2D([], [], linestyle="none")] * len(keys)  # a legend of text only
        ax.legend(blank, keys, title="Pareto frontier", loc="lower left", bbox_to_anchor=(1.02, 0.0), handlelength=0,
                  handletextpad=0, fontsize=10, alignment="left")  # fmt: skip
    return path


def plot_leakage(tables: Tables, path: Path) -> Path:
    """HR@k against total bytes per setting, coloured by the direction attack's
    precision (server/leakage.py): quality x bytes x leakage in one figure."""
    hr, settings, style = tables.hr, tables.settings, markers(tables)
    x, y, leak = "total_bytes_mean", f"{hr}_mean", "leak_direction_mean"
    with _figure(path, (12, 6)) as ax:
        scale = plt.Normalize(0.0, 1.0)
        for method, group in settings.groupby("method", sort=False):
            marker, _ = style[method]
            drawn = ax.scatter(group[x], group[y], c=group[leak], cmap="viridis_r", norm=scale, marker=marker, s=140,
                               edgecolor="black", label=method)  # fmt: skip
        for _, row in settings.iterrows():
            ax.annotate(row["label"], (row[x], row[y]), xytext=(6, -12), textcoords="offset points", fontsize=8)
        ax.figure.colorbar(drawn, ax=ax, label="direction attack precision (1 = every item named)")
        _log_x(ax, "total bytes over the whole run (uplink + downlink + requests)", f"{hr.upper()} at the last round")
        ax.legend(loc="lower right")
    return path


def plot_curves(tables: Tables, runs: pd.DataFrame, sweep: Path, path: Path) -> Path:
    """HR@k against cumulative uplink bytes, one line per run of `runs` (rows of
    the results table): how fast each buys its quality."""
    hr, style = tables.hr, markers(tables)
    with _figure(path, (9, 6)) as ax:
        drawn: dict[str, int] = {}  # runs drawn per method: the second of a method is dashed, and so on
        for _, row in runs.iterrows():
            rounds = rounds_of(sweep, row["folder"])
            rounds["cumulative"] = rounds["uplink_bytes"].cumsum()
            points = rounds.dropna(subset=[hr])
            marker, colour = style[row["method"]]
            line = LINES[drawn.get(row["method"], 0) % len(LINES)]
            drawn[row["method"]] = drawn.get(row["method"], 0) + 1
            ax.plot(points["cumulative"], points[hr], marker=marker, color=colour, linestyle=line, label=row["label"])
        _log_x(ax, "cumulative uplink bytes", f"{hr.upper()} (evaluated rounds)")
        ax.legend(loc="lower right")
    return path


def plot_bytes(tables: Tables, sweep: Path, path: Path) -> Path:
    """Mean bytes per training round, uplink and downlink, per setting."""
    per_round = []
    for _, row in tables.settings.iterrows():
        runs = tables.results[tables.results["setting"] == row["setting"]]
        means = pd.concat([_train_rounds(sweep, f) for f in runs["folder"]]).mean()
        per_round.append((row["label"], means["uplink_bytes"], means["downlink_bytes"]))
    frame = pd.DataFrame(per_round, columns=["label", "up", "down"]).sort_values("up", ascending=False)
    positions = range(len(frame))
    with _figure(path, (12, 1.5 + 0.45 * len(frame))) as ax:
        ax.barh([p + 0.2 for p in positions], frame["up"], height=0.4, color="tab:blue", hatch="//",
                edgecolor="black", label="uplink (all clients)")  # fmt: skip
        ax.barh([p - 0.2 for p in positions], frame["down"], height=0.4, color="lightgrey",
                edgecolor="black", label="downlink (all clients)")  # fmt: skip
        ax.set_yticks(list(positions), frame["label"])
        _log_x(ax, "bytes per training round, mean over rounds and seeds", "")
        smallest = frame[["up", "down"]].min().min()
        ax.set_xlim(left=10 ** np.floor(np.log10(smallest)))  # bars on a log axis need a stated origin
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return path


def _log_x(ax: plt.Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel(ylabel)


def rounds_of(sweep: Path, folder: str) -> pd.DataFrame:
    return pd.read_csv(sweep / folder / "rounds.csv")


def _train_rounds(sweep: Path, folder: str) -> pd.DataFrame:
    rounds = rounds_of(sweep, folder)
    return rounds.loc[rounds["round"] > 0, ["uplink_bytes", "downlink_bytes"]]


def plot_hr_against_total_bytes(rounds: dict[str, pd.DataFrame], hr: str, path: Path) -> Path:
    """HR@k against cumulative bytes (up + down) of each labelled run's
    rounds.csv, log scale (the demo's comparison)."""
    with _figure(path, (6.4, 4.0)) as ax:
        for (label, frame), marker in zip(rounds.items(), MARKERS):
            total = (frame["uplink_bytes"] + frame["downlink_bytes"]).cumsum() / 1e6
            points = frame.assign(total=total)[["total", hr]].dropna()
            ax.plot(points["total"], points[hr], marker=marker, label=label)
        _log_x(ax, "MB sent so far, up + down", hr.upper())
        ax.legend()
    return path
