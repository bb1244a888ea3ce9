"""`torl sft --config configs/<recipe>.yaml [--data FILE] [--<setting> value ...]`."""

from __future__ import annotations

SFT_EPILOG = """\
Every field of torl's SftSettings and of TRL's SFTConfig is a setting: put it in the recipe YAML or
override it here, e.g. `--data tir.jsonl --learning_rate 1e-5 --num_train_epochs 2 --run_dir runs/sft1`.
List them all with: python -c "from trl import SFTConfig, TrlParser; from torl.sft.config import SftSettings; \
TrlParser((SftSettings, SFTConfig)).print_help()"
"""


def register(subparsers) -> None:
    from torl.train.commands import add_recipe_command

    add_recipe_command(
        subparsers, "sft", run=_sft,
        help="SFT on tool-integrated trajectories (TRL SFTTrainer; loss on the model's tokens only)",
        description="Supervised fine-tuning on TIR trajectories or text-form TIR data; writes a run directory "
                    "that `torl eval --run` and `torl train --model` read.",
        usage="torl sft --config configs/<recipe>.yaml [--data FILE] [--<setting> <value> ...]",
        epilog=SFT_EPILOG,
    )


def _sft(settings: list[str]) -> int:
    from torl.sft.config import parse_sft_args
    from torl.sft.trainer import run_sft

    settings, sft_cfg = parse_sft_args(settings)
    return run_sft(settings, sft_cfg)
