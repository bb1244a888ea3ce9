"""`torl` command line: one sub-command per job; each package owns its own arguments.

Every `torl.<package>.commands` module exposes `register(subparsers)`, which adds its
sub-command(s) and sets `func` on the parsed namespace. Imports of heavy libraries stay
inside the command functions so `torl --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from torl.errors import InfraError, UserError

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
    except UserError as e:  # the user's mistake: one line naming the fix
        print(f"torl: error: {_message(e)}", file=sys.stderr)
        return 2
    except InfraError as e:  # ours: one line, no traceback; a training run keeps its checkpoints
        print(f"torl: error: {type(e).__name__}: {' '.join(_message(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("torl: interrupted", file=sys.stderr)
        return 130


def _message(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str() adds quotes
    return text or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
