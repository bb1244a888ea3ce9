"""`torl sft --config configs/<recipe>.yaml [--data FILE] [--<setting> value ...]`."""

from __future__ import annotations

import argparse

SFT_EPILOG = """\
Every field of torl's SftSettings and of TRL's SFTConfig is a setting: put it in the recipe YAML or
override it here, e.g. `--data tir.jsonl --learning_rate 1e-5 --num_train_epochs 2 --run_dir runs/sft1`.
List them all with: python -c "from trl import SFTConfig, TrlParser; from torl.sft.config import SftSettings; \
TrlParser((SftSettings, SFTConfig)).print_help()"
"""


def register(subparsers) -> None:
    # As `torl train`: every argument goes to TRL's parser, so this sub-parser must not read "--...".
    parser = subparsers.add_parser(
        "sft",
        help="SFT on tool-integrated trajectories (TRL SFTTrainer; loss on the model's tokens only)",
        description="Supervised fine-tuning on TIR trajectories or text-form TIR data; writes a run directory "
                    "that `torl eval --run` and `torl train --model` read.",
        usage="torl sft --config configs/<recipe>.yaml [--data FILE] [--<setting> <value> ...]",
        epilog=SFT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("settings", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_sft, _sft_parser=parser)


def _sft(args) -> int:
    if not args.settings or {"-h", "--help"} & set(args.settings):
        args._sft_parser.print_help()
        return 0
    from torl.sft.config import parse_sft_args
    from torl.sft.trainer import run_sft

    settings, sft_cfg = parse_sft_args(args.settings)
    return run_sft(settings, sft_cfg)
