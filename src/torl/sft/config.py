"""`torl sft` configuration: torl's `SftSettings` next to TRL's `SFTConfig`, parsed like `torl train`'s.

A recipe is a YAML file (`--config configs/sft-demo.yaml`) whose keys are fields of either
dataclass; `--<field> value` overrides it (`--data FILE` sets the data). The task fields (template,
C, stop strings, call trigger, sandbox limits, reward) define the task spec the data is rendered
and checked under; the run directory records it, so `torl eval --run` and `torl train --model RUN_DIR`
use exactly that protocol.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path

from torl.errors import UserError
from torl.tir.task import TaskSpec


@dataclasses.dataclass
class SftSettings:
    """torl's half of the SFT configuration (TRL's `SFTConfig` is the other half)."""

    model: str = field(default="smollm2-135m", metadata={"help": "Built-in name, local checkpoint dir, or HF hub id."})
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "JSONL files: text-form rows {problem, answer, response} or trajectories (torl rollout "
                          "--json, RUN_DIR/samples/*.jsonl, eval trajectories.jsonl). Empty: expert data for "
                          "expert_tasks."},
    )
    only_correct: bool = field(
        default=True, metadata={"help": "Skip trajectories recorded as wrong (correct: false)."})
    add_eos: bool = field(
        default=True, metadata={"help": "End text-form responses with the EOS token (mask 1: ending is the model's "
                                        "decision)."})
    # --- the task spec (torl.tir.task.TaskSpec): how prompts are rendered and observations masked
    task_spec: str | None = field(
        default=None, metadata={"help": "Take the task spec from this run directory or task_spec.json instead of "
                                        "the fields below."})
    template: str = field(default="torl_fewshot", metadata={"help": "Prompt template name (torl.tir templates)."})
    max_tool_calls: int = field(default=1, metadata={"help": "C: a row with more ```output blocks is refused."})
    stop_strings: list[str] = field(default_factory=list, metadata={"help": "Extra strings that end a response."})
    call_trigger: str = field(
        default="output_fence",
        metadata={"help": "output_fence (the model writes ```output) | block_close (the interpreter writes the "
                          "whole ```output block after the model's closing fence)."})
    max_response_tokens: int = field(default=2048, metadata={"help": "The spec's response budget (eval, RL)."})
    sandbox_timeout_s: float = field(default=5.0, metadata={"help": "Wall-clock limit per code block."})
    sandbox_memory_mb: int = field(default=1024, metadata={"help": "Memory limit per code block."})
    reward_scheme: str = field(default="torl", metadata={"help": "torl | binary | torl_exec_penalty"})
    protocol: str = field(default="code_blocks", metadata={"help": "code_blocks | tool_calls (a chat template's "
                                                                   "hermes tool calls: id-form data only)."})
    tools: list[str] = field(default_factory=lambda: ["python"], metadata={"help": "tool_calls: the tools by name."})
    # --- expert TIR data (torl.sft.expert), when no data file is given
    train_tasks: list[str] = field(
        default_factory=list, metadata={"help": "Synthetic task kinds the expert writes TIR data for."})
    train_task_count: int = field(default=256, metadata={"help": "Synthetic tasks generated (as torl train)."})
    train_task_difficulty: int = field(default=1, metadata={"help": "Synthetic task difficulty."})
    eval_holdout: int = field(
        default=0, metadata={"help": "Questions held out exactly as torl train holds them out (same seed): never "
                                     "trained on, here or in RL."})
    # --- outputs
    run_dir: str = field(default="runs/sft", metadata={"help": "Run directory (config, metrics, checkpoints)."})
    torch_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (None: torch's)."})
    # --- LoRA (PEFT), as torl train
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 = full fine-tuning."})
    lora_alpha: float = field(default=32.0, metadata={"help": "Updates scale by lora_alpha / lora_r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Module names, or all-linear."})

    def __post_init__(self) -> None:
        for name in ("data", "stop_strings", "train_tasks", "lora_target_modules", "tools"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])

    def task(self) -> TaskSpec:
        """The task spec the data is rendered and checked under (a bad value is one UserError line)."""
        try:
            if self.task_spec:
                path = Path(self.task_spec)
                return TaskSpec.load(path.parent if path.name == "task_spec.json" else path)
            return TaskSpec(template=self.template, max_tool_calls=self.max_tool_calls,
                            extra_stop=tuple(self.stop_strings), max_response_tokens=self.max_response_tokens,
                            exec_timeout_s=self.sandbox_timeout_s, exec_memory_mb=self.sandbox_memory_mb,
                            call_trigger=self.call_trigger, reward_scheme=self.reward_scheme,
                            protocol=self.protocol, tools=tuple(self.tools))
        except ValueError as e:
            raise UserError(str(e)) from None


    def questions_config(self):
        """The `TorlConfig` whose training questions and held-out split (`torl.train.data.load_questions`)
        are this recipe's: `torl train` with the same task settings and seed trains on the same ones."""
        from torl.train.config import TorlConfig

        return TorlConfig(train_tasks=self.train_tasks, train_task_count=self.train_task_count,
                          train_task_difficulty=self.train_task_difficulty, eval_holdout=self.eval_holdout,
                          sandbox_timeout_s=self.sandbox_timeout_s, sandbox_memory_mb=self.sandbox_memory_mb)


def parse_sft_args(argv: list[str]):
    """`--config recipe.yaml` plus overrides into `(SftSettings, SFTConfig)`."""
    from trl import SFTConfig

    from torl.train.config import parse_recipe

    return parse_recipe(argv, (SftSettings, SFTConfig), "sft")


def validate(settings: SftSettings, sft_cfg) -> TaskSpec:
    """Check what needs no model; returns the task spec."""
    from torl.train.config import check_lora, check_model

    task = settings.task()
    if not settings.data and not settings.train_tasks:
        raise UserError("no SFT data: give --data FILE (text-form rows or trajectories) or train_tasks for expert data")
    for path in settings.data:
        if not Path(path).is_file():
            raise UserError(f"SFT data file not found: {path}")
    if sft_cfg.completion_only_loss is False:
        raise UserError("completion_only_loss must stay true: the loss covers the model's tokens only (the prompt "
                        "and interpreter outputs are context), as in RL")
    if sft_cfg.assistant_only_loss:
        raise UserError("assistant_only_loss is for chat-message datasets; torl sft masks by its own token mask "
                        "(completion_mask): leave it false")
    check_lora(settings)
    check_model(settings.model)
    return task
