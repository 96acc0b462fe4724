"""The ``tcmp`` command line: one subcommand per task (train, sweep, ...)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tcmplib import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcmp",
        description="Tiny GCNs with topologically consistent magnitude pruning: "
        "train, prune and sweep the paper's experiments.",
    )
    parser.add_argument("--version", action="version", version=f"tcmp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Subcommands are added below as `commands.add_parser(...)` with a `handler` default
    # that takes the parsed arguments and returns the exit status.
    _ = commands
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
