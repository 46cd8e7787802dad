"""The `prunus` command line."""

from __future__ import annotations

import argparse
import sys

from prunus.common.config import ConfigError, load
from prunus.common.data import DatasetError
from prunus.common.params import NonFiniteModel
from prunus.common.results import code_version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("simulate", "federated training on Flower's Simulation Engine (Ray)"),
        ("centralized", "the same data and model trained without federation"),
        ("partition", "write one data file per partition, for the SuperNodes of a real federation"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("config", nargs="?", help="TOML file of config keys")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
        sub.add_argument("--out", help="output folder (runs: summary.json, rounds.csv, curve.png; partition: the files)")
        if name == "simulate":
            sub.add_argument("--ray-address", help="attach to a running Ray cluster (auto or HOST:PORT)")
            sub.add_argument("--verbose", action="store_true",
                             help="Flower's and Ray's logs on the console too (always in RUN_DIR/run.log)")
            sub.add_argument("--resume", metavar="RUN_DIR",
                             help="continue the run in RUN_DIR from its last checkpoint (checkpoint-every > 0); "
                                  "the config, if given, must be the run's")  # fmt: skip
    demo = commands.add_parser("demo", help="dense FedAvg against a pruned federation on synthetic data, compared")
    demo.add_argument("--out", default="runs/demo", help="folder for both runs and the comparison (default runs/demo)")
    demo.add_argument("--verbose", action="store_true", help="Flower's and Ray's logs on the console too")
    sweep = commands.add_parser("sweep", help="run every point of a grid of configs (resumable), then report")
    sweep.add_argument("grid", help="grid TOML: base config, seeds, [set] and [[grids]] blocks of key = [values]")
    sweep.add_argument("--out", required=True, help="sweep folder: runs/<point>/, results.csv, report.md")
    sweep.add_argument("--jobs", type=_positive_int, default=1, help="points run at once (default 1)")
    sweep.add_argument("--ray-address", help="attach every point to this Ray cluster (auto or HOST:PORT)")
    sweep.add_argument("--point-timeout", type=float, metavar="SECONDS",
                       help="stop a point that runs longer and count it failed (default: no limit)")  # fmt: skip
    report = commands.add_parser("report", help="results tables, plots and report.md of a sweep folder")
    report.add_argument("dir", help="the folder `prunus sweep --out` wrote")
    report.add_argument("--curves", nargs="+", metavar="LABEL",
                        help="settings (labels as in report.md) to draw in curves.png; "
                             "default: the best setting of each method")  # fmt: skip
    recommend = commands.add_parser("recommend", help="top-N items from a run's saved model, for items a user liked")
    recommend.add_argument("run", help="a finished run's --out folder (summary.json, model.npz)")
    recommend.add_argument("--items", metavar="ID,ID,...", help="items the user liked: the data set's own item ids")
    recommend.add_argument("--user", metavar="ID", help="instead, this user's training items (the data set's user id)")
    recommend.add_argument("-n", type=_positive_int, default=10, help="how many items to recommend (default 10)")
    recommend.add_argument("--titles", metavar="FILE",
                           help="movies.dat or u.item for titles (default: found beside the data)")  # fmt: skip
    evaluate = commands.add_parser("evaluate", help="re-score a run's saved model on its split (HR@k, NDCG@k)")
    evaluate.add_argument("run", help="a finished run's --out folder (summary.json, model.npz)")
    distill = commands.add_parser("distill", help="compact MF students of a run's model, distilled on the server "
                                                  "alone (no client data), each saved as a run folder")
    distill.add_argument("run", help="the teacher: a finished MF run's --out folder (summary.json, model.npz)")
    distill.add_argument("--dim", type=_positive_int, nargs="+", required=True, help="the students' widths")
    distill.add_argument("--method", nargs="+", default=["ranking"],
                         help="distillers (svd, scores, ranking; default ranking), each at every width")
    distill.add_argument("--out", required=True,
                         help="folder for OUT/<method>-d<dim>/ run folders and distillation.{csv,json,md}")
    distill.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a distillation setting (pseudo-users, distill-epochs, temperature, ...) or a key of "
                              "the run config the teacher and students are evaluated with (eval-split=validation)")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    code_version()  # the code this process runs, read before anything can edit it
    args = _parser().parse_args(argv)
    if args.command in ("sweep", "report"):
        return _sweep_or_report(args)
    if args.command == "demo":
        from pathlib import Path

        from prunus.simulations.demo import run_demo

        run_demo(Path(args.out), args.verbose)
        return 0
    if args.command in ("recommend", "evaluate"):
        return _use_model(args)
    if args.command == "distill":
        return _distill(args)
    overrides = list(args.set)
    if args.out:
        overrides.append(f"out={args.out}")
    if getattr(args, "ray_address", None):
        overrides.append(f"ray-address={args.ray_address}")
    try:
        if getattr(args, "resume", None):
            return _resume(args, overrides)
        cfg = load(args.config, overrides)
        if args.command == "simulate":
            from prunus.simulations.simulate import run_simulate

            run_simulate(cfg, verbose=args.verbose)
        elif args.command == "partition":
            _partition(cfg)
        else:
            from prunus.simulations.centralized import run_centralized

            run_centralized(cfg)
    except (ConfigError, DatasetError, NonFiniteModel) as err:
        print(f"prunus: error: {err}", file=sys.stderr)
        return 2
    return 0


def _resume(args: argparse.Namespace, overrides: list[str]) -> int:
    """`prunus simulate --resume RUN_DIR [CONFIG] [--set ...]`: the run's own
    config unless one is given, which must then match it."""
    from pathlib import Path

    from prunus.common.config import from_mapping, parse_overrides
    from prunus.server.checkpoint import check_resumable
    from prunus.server.checkpoint import load as load_checkpoint
    from prunus.simulations.simulate import run_simulate

    out = Path(args.resume)
    try:
        checkpoint = load_checkpoint(out)
        if args.config:
            cfg = load(args.config, [*overrides, f"out={out}"])
        else:  # the run's own config, with any --set on top (of how it runs)
            values = checkpoint.config | parse_overrides(overrides) | {"out": str(out)}
            cfg = from_mapping(values, source=f"{out}/checkpoint.npz")
        check_resumable(cfg, checkpoint)
        run_simulate(cfg, verbose=args.verbose, resume=checkpoint)
    except (ConfigError, DatasetError, NonFiniteModel) as err:
        print(f"prunus: error: {err}", file=sys.stderr)
        return 2
    return 0


def _sweep_or_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunus.simulations.report import write_report
    from prunus.simulations.sweep import run_sweep
    from prunus.simulations.table import ReportError

    try:
        if args.command == "sweep":
            return run_sweep(args.grid, Path(args.out), args.jobs, args.ray_address, args.point_timeout)
        print(write_report(Path(args.dir), args.curves))
        return 0
    except (ConfigError, ReportError) as err:
        print(f"prunus: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunus: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _use_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunus.simulations.recommend import (
        RunError,
        check_request,
        evaluate_run,
        format_evaluation,
        open_run,
        recommend,
    )  # fmt: skip

    try:
        if args.command == "recommend":
            check_request(args.items, args.user)  # before any data is read
        run = open_run(Path(args.run))
        if args.command == "evaluate":
            print(format_evaluation(run, evaluate_run(run)))
        else:
            print(recommend(run, args.items, args.user, args.n, args.titles))
    except (ConfigError, DatasetError, RunError) as err:
        print(f"prunus: error: {err}", file=sys.stderr)
        return 2
    return 0


def _distill(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunus.common.distill import DistillError
    from prunus.simulations.distill import format_table, run_distill
    from prunus.simulations.recommend import RunError

    try:
        rows = run_distill(Path(args.run), args.dim, args.method, Path(args.out), args.set)
    except (ConfigError, DatasetError, RunError, DistillError) as err:
        print(f"prunus: error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


def _partition(cfg) -> None:
    from pathlib import Path

    from prunus.common.partition_files import write_partition_files

    out = Path(cfg.runtime.out)
    manifest = write_partition_files(cfg, out)
    for entry in manifest["files"]:
        print(f"{out / entry['file']}  users {entry['users']:>6}  interactions {entry['interactions']:>8}")
    print(f"{manifest['num_partitions']} partitions; start SuperNode K with "
          f"--node-config 'partition-id=K data-file=\"{out.resolve()}/partition-K.npz\"'")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
