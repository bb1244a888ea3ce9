"""`torl train --config configs/<recipe>.yaml [--setting value ...] [--resume]`."""

from __future__ import annotations

import argparse

TRAIN_EPILOG = """\
Every field of torl's TorlConfig and of TRL's GRPOConfig is a setting: put it in the recipe YAML or
override it here, e.g. `--learning_rate 1e-5 --max_steps 20 --run_dir runs/try1`.
List them all with: python -c "from trl import GRPOConfig, TrlParser; from torl.train.config import TorlConfig; \
TrlParser((TorlConfig, GRPOConfig)).print_help()"
"""


def register(subparsers) -> None:
    # Every argument goes to TRL's parser (TrlParser: --config YAML + --<field> overrides), so this
    # sub-parser must not interpret "--..." itself: a prefix character no option uses makes argparse
    # hand the whole remainder over untouched.
    parser = subparsers.add_parser(
        "train",
        help="GRPO training with tool-integrated rollouts (TRL GRPOTrainer + torl rollouts)",
        description="Train a policy with GRPO on tool-integrated rollouts; writes a run directory.",
        usage="torl train --config configs/<recipe>.yaml [--<setting> <value> ...] [--resume]",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prefix_chars="+",
        add_help=False,
    )
    parser.add_argument("settings", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_train, _train_parser=parser)


def _train(args) -> int:
    if not args.settings or {"-h", "--help"} & set(args.settings):
        args._train_parser.print_help()
        return 0
    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    torl_cfg, grpo_cfg = parse_train_args(args.settings)
    return run_training(torl_cfg, grpo_cfg)
