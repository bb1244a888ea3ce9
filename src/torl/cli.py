"""`torl` command line: one sub-command per job; each package owns its own arguments.

Every `torl.<package>.commands` module exposes `register(subparsers)`, which adds its
sub-command(s) and sets `func` on the parsed namespace. Imports of heavy libraries stay
inside the command functions so `torl --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from torl.errors import UserError

# Order is the order shown in `torl --help`.
COMMAND_MODULES = [
    "torl.train.commands",
    "torl.sft.commands",
    "torl.eval.commands",
    "torl.tir.commands",
    "torl.analysis.commands",
    "torl.data.commands",
    "torl.reward.commands",
    "torl.sandbox.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"torl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("torl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
