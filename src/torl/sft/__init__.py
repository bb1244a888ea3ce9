"""Supervised fine-tuning on tool-integrated trajectories (`torl sft`), under RL's token contract.

`data.py` turns trajectories or text-form TIR rows into token ids and a loss mask (0 on the prompt
and every interpreter token); `expert.py` writes fixed-pattern expert TIR data with real sandbox
outputs; `config.py` is the recipe (torl's `SftSettings` next to TRL's `SFTConfig`); `trainer.py`
runs TRL's `SFTTrainer` into a run directory that `torl eval --run` and `torl train --model` read.
"""
