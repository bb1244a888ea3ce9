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
    add_recipe_command(
        subparsers, "train", run=_train,
        help="GRPO training with tool-integrated rollouts (TRL GRPOTrainer + torl rollouts)",
        description="Train a policy with GRPO on tool-integrated rollouts; writes a run directory.",
        usage="torl train --config configs/<recipe>.yaml [--<setting> <value> ...] [--resume]",
        epilog=TRAIN_EPILOG,
    )


def add_recipe_command(subparsers, name: str, *, run, help: str, description: str, usage: str, epilog: str) -> None:
    """A sub-command whose arguments are a recipe and its overrides, all for TRL's parser (`torl train`,
    `torl sft`): `run(settings)` gets them untouched; none, -h or --help print the usage and epilog."""
    # Every argument goes to TRL's parser (TrlParser: --config YAML + --<field> overrides), so this
    # sub-parser must not interpret "--..." itself: a prefix character no option uses makes argparse
    # hand the whole remainder over untouched.
    parser = subparsers.add_parser(name, help=help, description=description, usage=usage, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, prefix_chars="+",
                                   add_help=False)
    parser.add_argument("settings", nargs=argparse.REMAINDER)

    def func(args) -> int:
        if not args.settings or {"-h", "--help"} & set(args.settings):
            parser.print_help()
            return 0
        return run(args.settings)

    parser.set_defaults(func=func)


def _train(settings: list[str]) -> int:
    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    torl_cfg, grpo_cfg = parse_train_args(settings)
    return run_training(torl_cfg, grpo_cfg)
