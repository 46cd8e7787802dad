"""`prunus sweep`: every point of a grid as its own `prunus simulate` process.

A process per point means a crash or a kill loses that point only; a rerun
skips the points whose run folder is complete for the same resolved config
and reruns the rest, so a sweep of hours can be stopped and resumed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from prunus.simulations.grid import LAUNCH_KEYS, Point, load_grid
from prunus.simulations.report import write_report
from prunus.simulations.runs import MANIFEST, POINT, complete_summary, point_record, run_dir, write_json
from prunus.simulations.table import ReportError

CONFIG = "config.toml"
LOG = "simulate.log"
POLL_S = 0.5
PROGRESS_EVERY_S = 60.0


@dataclass
class _Active:
    point: Point
    out: Path  # the sweep folder
    process: subprocess.Popen
    started: float
    log: TextIO
    timed_out: bool = False

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def round(self) -> int:
        """The last round the run has logged (its rounds.csv is rewritten every round), 0 before any."""
        try:
            last = (run_dir(self.out, self.point.name) / "rounds.csv").read_text().strip().splitlines()[-1]
            return int(last.split(",")[0])
        except (OSError, IndexError, ValueError):
            return 0


@dataclass
class _Progress:
    """The sweep's state, printed as one line and appended to DIR/sweep.log."""

    log_path: Path
    total: int
    jobs: int
    point_timeout: float | None
    skipped: int = 0
    done: int = 0
    failed: list[str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        line = f"[sweep] {message}"
        print(line, flush=True)
        with self.log_path.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def status(self, active: list[_Active], pending: int) -> str:
        elapsed = time.monotonic() - self.started
        eta = "?"
        rounds_done = [(r, r.round()) for r in active]  # each run's rounds.csv read once
        # a point's duration: the mean of those done, else extrapolated from the running points' rounds
        durations = self.durations or [r.seconds * r.point.config.federation.rounds / done for r, done in rounds_done if done]
        if durations:
            mean = sum(durations) / len(durations)
            left = mean * (pending + len(active)) - sum(min(r.seconds, mean) for r in active)
            eta = _duration(left / self.jobs)
        rounds = "".join(f" [{r.point.name}: round {done}/{r.point.config.federation.rounds}]" for r, done in rounds_done)
        return (
            f"{self.skipped + self.done}/{self.total} complete ({self.skipped} skipped), {len(active)} running, "
            f"{len(self.failed)} failed, elapsed {_duration(elapsed)}, ETA {eta}{rounds}"
        )


def run_sweep(
    grid: str | Path, out: Path, jobs: int = 1, ray_address: str | None = None, point_timeout: float | None = None
) -> int:
    """Run the grid's missing points, then write the report; 0 if every point is complete.
    A point running longer than `point_timeout` seconds is stopped and counted failed,
    so one hung simulation cannot hold the sweep."""
    points = load_grid(grid)  # every config resolved and checked before anything runs
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, {"grid": str(grid), "points": [point_record(p) for p in points]})
    progress = _Progress(out / "sweep.log", len(points), jobs, point_timeout)
    progress.say(f"{len(points)} points from {grid} into {out}, {jobs} at a time")
    todo: deque[Point] = deque()
    for point in points:
        if complete_summary(run_dir(out, point.name), point.config_hash) is not None:
            progress.skipped += 1
            progress.say(f"skip {point.name} (complete)")
        else:
            todo.append(point)
    _run_points(todo, out, progress, ray_address)
    progress.say(f"finished: {progress.status([], 0)}")
    for name in progress.failed:
        progress.say(f"failed: {name} (log: {run_dir(out, name) / LOG})")
    try:
        progress.say(f"report: {write_report(out)}")
    except ReportError as err:
        progress.say(f"no report: {err}")
    return 0 if not progress.failed else 1


def _run_points(todo: deque[Point], out: Path, progress: _Progress, ray_address: str | None) -> None:
    """Keep up to `jobs` simulations running; on SIGTERM or Ctrl-C stop them too."""
    active: list[_Active] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    last_status = time.monotonic()
    try:
        while todo or active:
            while todo and len(active) < progress.jobs:
                active.append(_start(todo.popleft(), out, ray_address, progress.jobs))
                progress.say(f"start {active[-1].point.name}")
            time.sleep(POLL_S)
            for run in active:
                if progress.point_timeout and run.seconds > progress.point_timeout:
                    run.timed_out = True
                    _stop(run.process)
            for run in [r for r in active if r.process.poll() is not None]:
                active.remove(run)
                _finish(run, out, progress)
                progress.say(progress.status(active, len(todo)))
                last_status = time.monotonic()
            if time.monotonic() - last_status > PROGRESS_EVERY_S:
                progress.say(progress.status(active, len(todo)))
                last_status = time.monotonic()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for run in active:
            _stop(run.process)
            run.log.close()


def _start(point: Point, out: Path, ray_address: str | None, jobs: int) -> _Active:
    """A fresh folder (so no file of a broken or older run survives), then the run."""
    folder = run_dir(out, point.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(folder / POINT, point_record(point))
    values = {k: v for k, v in point.config.to_dict().items() if k not in LAUNCH_KEYS}
    (folder / CONFIG).write_text(_toml(values))
    command = [sys.executable, "-m", "prunus.simulations.cli", "simulate", str(folder / CONFIG), "--out", str(folder)]
    if jobs > 1:  # the points running at once share the cluster's (or the machine's) client actors
        command += ["--set", f"ray-share={jobs}"]
    if ray_address:
        command += ["--ray-address", ray_address]
    log = (folder / LOG).open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return _Active(point, out, process, time.monotonic(), log)


def _finish(run: _Active, out: Path, progress: _Progress) -> None:
    run.log.close()
    seconds = run.seconds
    progress.durations.append(seconds)
    folder = run_dir(out, run.point.name)
    code = run.process.returncode
    if code == 0 and complete_summary(folder, run.point.config_hash) is not None:
        progress.done += 1
        progress.say(f"done {run.point.name} in {_duration(seconds)}")
    else:
        progress.failed.append(run.point.name)
        reason = f"exit code {code}" if code else "exited 0 without complete outputs"
        if run.timed_out:
            reason = f"stopped after the point timeout of {progress.point_timeout:g} s"
        progress.say(f"FAILED {run.point.name} ({reason}, log: {folder / LOG})")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _toml(values: dict[str, Any]) -> str:
    """A flat TOML file of a resolved config (what `prunus simulate` reads back)."""
    return "".join(f"{key} = {_literal(value)}\n" for key, value in values.items())


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are valid in TOML basic strings
    return repr(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
