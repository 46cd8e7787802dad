"""The run's one live progress display: round, ETA, bytes so far, last metrics, lost and defended replies.

On a terminal it is a single `rich` progress line redrawn in place; anywhere
else (a pipe, a log file, a sweep's captured output) it prints one plain line
per round, which is what a log reader wants. Lost replies (failed or rejected)
and what the server's defences did (replies zeroed, clipped, steps refused)
are always on the line: a run whose clients fail or attack must not look like
a healthy one.
"""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from prunus.server.ledger import RoundLog


class RoundProgress:
    """Shows each finished round; `close()` ends the live line before the final table."""

    def __init__(self, rounds: int, live: bool | None = None) -> None:
        self.rounds = rounds
        self.live = sys.stdout.isatty() if live is None else live
        self.total = self.lost = 0
        self.metrics = ""
        self._bar: Progress | None = None
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]prunus[/bold] round"), MofNCompleteColumn(), BarColumn(bar_width=16),
                TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                console=Console(file=sys.stdout), transient=False,
            )
            self._task = self._bar.add_task("train", total=rounds, status="")
            self._bar.start()

    def update(self, entry: RoundLog) -> None:
        sent = entry.uplink_bytes + entry.downlink_bytes + entry.request_bytes + entry.protocol_bytes
        self.total += sent
        self.lost += entry.failures + entry.rejected
        metrics = " ".join(f"{k} {v:.4f}" for k, v in entry.metrics.items() if k.startswith(("hr@", "ndcg@")))
        self.metrics = " ".join(f"{k} {v:.4f}" for k, v in entry.metrics.items() if k.startswith("hr@")) or self.metrics
        defended = ((entry.failures, "failed"), (entry.rejected, "rejected"), (entry.zeroed, "zeroed"),
                    (entry.row_clipped, "row-clipped"), (entry.clipped, "clipped"),
                    (entry.weight_capped, "weight-capped"), (entry.refused, "step refused"),
                    (int(entry.metrics.get("downlink-clipped", 0)), "entries clipped in the broadcast"))
        lost = "".join(f"  {n} {what}" for n, what in defended if n)
        if self._bar is not None:
            status = f"{self.total / 1e6:.1f} MB sent  {self.metrics}"
            if self.lost:
                status += f"  [red]{self.lost} lost[/red]"
            if lost:  # this round's, as on the plain line
                status += f"  [yellow]round {entry.round}:{lost}[/yellow]"
            self._bar.update(self._task, completed=entry.round, status=status)
            return
        # a secure round's server learns no client's loss
        loss = f"loss {entry.train_loss:.4f}" if math.isfinite(entry.train_loss) else "loss   n/a "
        protocol = f"protocol {entry.protocol_bytes / 1e6:6.2f}  " if entry.protocol_bytes else ""
        print(
            f"[prunus] round {entry.round:>4}/{self.rounds}  clients {entry.replies:>4}/{entry.clients:<4}{lost}  "
            f"total {sent / 1e6:8.2f} MB  up {entry.uplink_bytes / 1e6:8.2f}  down {entry.downlink_bytes / 1e6:8.2f}  "
            f"{protocol}"
            f"{loss}  {entry.seconds:6.1f} s  {metrics}",
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
