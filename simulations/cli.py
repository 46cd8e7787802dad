"""The `prunus` command line."""

from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, load
from common.data import DatasetError


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = list(args.set)
    if args.out:
        overrides.append(f"out={args.out}")
    if getattr(args, "ray_address", None):
        overrides.append(f"ray-address={args.ray_address}")
    try:
        cfg = load(args.config, overrides)
        if args.command == "simulate":
            from simulations.simulate import run_simulate

            run_simulate(cfg)
        elif args.command == "partition":
            _partition(cfg)
        else:
            from simulations.centralized import run_centralized

            run_centralized(cfg)
    except (ConfigError, DatasetError) as err:
        print(f"prunus: error: {err}", file=sys.stderr)
        return 2
    return 0


def _partition(cfg) -> None:
    from pathlib import Path

    from common.partition_files import write_partition_files

    out = Path(cfg.out)
    manifest = write_partition_files(cfg, out)
    for entry in manifest["files"]:
        print(f"{out / entry['file']}  users {entry['users']:>6}  interactions {entry['interactions']:>8}")
    print(f"{manifest['num_partitions']} partitions; start SuperNode K with "
          f"--node-config 'partition-id=K data-file=\"{out.resolve()}/partition-K.npz\"'")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
