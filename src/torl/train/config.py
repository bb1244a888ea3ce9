"""`torl train` configuration: torl's own fields next to TRL's `GRPOConfig`, parsed the TRL way.

A recipe is a YAML file (`--config configs/<recipe>.yaml`) whose keys are fields of either
dataclass; command-line flags (`--learning_rate 1e-5`) override it. The task's fields (template,
C, limits, reward: `torl.tir.task.TaskSettings`) are TaskSpec's, under the same names everywhere;
old spellings still read, with a note. `validate` then checks everything that can be checked
without loading a model, so a typo costs seconds, not minutes.
"""

from __future__ import annotations

import dataclasses
import glob
from dataclasses import field
from pathlib import Path

from torl.errors import UserError, first_line
from torl.metrics.alarms import HealthConfig
from torl.tir.task import DEPRECATED_NAMES, TaskSettings, TaskSpec, note_deprecated
from torl.train.update.signal import ZERO_SIGNAL_UPDATES

ENGINES = ("auto", "transformers", "vllm")
# auto: coast where a micro-batch can be skipped, compute under ZeRO-3/FSDP where it cannot
ZERO_SIGNAL_CHOICES = ("auto", *ZERO_SIGNAL_UPDATES)
SANDBOX_BACKENDS = ("local", "remote")


@dataclasses.dataclass
class TorlConfig(TaskSettings):
    """torl's half of the training configuration (TRL's `GRPOConfig` is the other half).

    The task fields come first, from `TaskSettings` (torl.tir.task: template, max_tool_calls,
    extra_stop, max_response_tokens, max_observation_chars, exec_timeout_s, exec_memory_mb, session,
    call_trigger, reward_scheme, protocol, tools, search_corpus, max_calls_per_tool, error_marker,
    tool_modules); `task()` is the run's TaskSpec. TRL's `max_completion_length` follows
    `max_response_tokens`."""

    # --- policy and rollout engine
    model: str = field(default="smollm2-135m", metadata={"help": "Built-in name, local checkpoint dir, or HF hub id."})
    engine: str = field(default="auto", metadata={"help": "auto (vllm on GPU, transformers on CPU) | transformers | vllm"})
    # --- learning signal (torl.train.update.signal): groups whose rewards are all equal carry no gradient
    zero_signal_updates: str = field(
        default="auto",
        metadata={"help": "Micro-batches without signal are never computed; on a step with no signal at all the "
                          "optimizer coast (steps on the zero gradient, as TRL) | skip (no update) | compute (TRL as is, "
                          "every micro-batch computed) | auto (coast; compute under ZeRO-3/FSDP, which shard the "
                          "parameters so every process must run every micro-batch)."},
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={"help": "DAPO dynamic sampling: replace groups without signal by groups of other prompts."},
    )
    dynamic_sampling_max_rounds: int = field(
        default=2, metadata={"help": "Extra generation rounds per step at most (dynamic_sampling)."},
    )
    share_prompt_forward: bool = field(
        default=True,
        metadata={"help": "Score the rows of a GRPO group with one forward of their shared prompt (same logps and "
                          "gradients, less compute; single process, no gradient checkpointing; torl.train.update.shared_prompt)."},
    )
    # --- run health (torl.metrics.health metrics, torl.metrics.alarms alarms; wired in torl.train.watch)
    health_checks: bool = field(
        default=True,
        metadata={"help": "Compute the health/* metrics and run the alarms each step (false: neither, e.g. to "
                          "measure their cost)."},
    )
    health_stop_on_alarm: bool = field(
        default=False, metadata={"help": "Save a checkpoint and stop the run when a health alarm first fires."},
    )
    health_tool_drop: float = field(
        default=HealthConfig.tool_drop, metadata={"help": "tool_collapse: share of the running peak lost."})
    health_tool_min_peak: float = field(
        default=HealthConfig.tool_min_peak, metadata={"help": "tool_collapse: peaks below this never alarm."})
    health_tool_window: int = field(
        default=HealthConfig.tool_window, metadata={"help": "tool_collapse: steps averaged before comparing."})
    health_grad_spike_factor: float = field(
        default=HealthConfig.grad_spike_factor, metadata={"help": "grad_norm_spike: grad_norm > factor x median."})
    health_grad_window: int = field(
        default=HealthConfig.grad_window, metadata={"help": "grad_norm_spike: recent norms the median is over."})
    health_grad_warmup: int = field(
        default=HealthConfig.grad_warmup, metadata={"help": "grad_norm_spike: norms seen before spikes are judged."})
    health_entropy_reference_steps: int = field(
        default=HealthConfig.entropy_reference_steps,
        metadata={"help": "entropy_collapse: first steps whose mean entropy is the reference."})
    health_entropy_fraction: float = field(
        default=HealthConfig.entropy_fraction,
        metadata={"help": "entropy_collapse: entropy < fraction x reference alarms."})
    health_no_boxed_max: float = field(
        default=HealthConfig.no_boxed_max,
        metadata={"help": "format_collapse: share of responses without \\boxed{} above which it alarms."})
    filter_void_turns: bool = field(
        default=False,
        metadata={"help": "SimpleTIR filter: responses with a void turn get no loss (env_mask all 0); GRPO "
                          "advantages are still computed over the full group."},
    )
    # --- end run health
    # --- sampler/trainer mismatch (torl.train.update.mismatch; definitions in torl/metrics/METRICS.md)
    importance_sampling_correction: str = field(
        default="auto",
        metadata={"help": "TRL's truncated importance sampling on our rollouts (mode and caps: TRL's "
                          "vllm_importance_sampling_mode/_clip_max/_clip_min): auto (on for engine=vllm, which samples "
                          "with its own weights and kernels; off for engine=transformers, which samples with the "
                          "trainer's module) | on | off."},
    )
    mismatch_metrics: str = field(
        default="auto",
        metadata={"help": "Log mismatch/* (sampler vs trainer logprobs) each step: auto (when the correction is on, "
                          "at no extra cost) | on (also without it: a no-grad forward per generation batch when TRL "
                          "computes no old logprobs) | off."},
    )
    # --- end sampler/trainer mismatch
    # --- sandbox (its per-block limits are the task's exec_timeout_s / exec_memory_mb)
    sandbox: str = field(default="local", metadata={"help": "local | remote"})
    sandbox_url: str | None = field(default=None, metadata={"help": "Remote sandbox URL (sandbox=remote)."})
    sandbox_workers: int | None = field(default=None, metadata={"help": "Warm interpreter workers (None: backend default)."})
    max_sandbox_error_ratio: float = field(
        default=0.1, metadata={"help": "Stop the run when a step's share of sandbox-error responses exceeds this."}
    )
    # --- data
    train_files: list[str] = field(default_factory=list, metadata={"help": "JSONL/parquet record files (globs ok)."})
    optional_train_files: list[str] = field(
        default_factory=list, metadata={"help": "Like train_files, but skipped (with a note) when absent."}
    )
    train_tasks: list[str] = field(default_factory=list, metadata={"help": "Synthetic task kinds (torl.data)."})
    train_task_count: int = field(default=256, metadata={"help": "How many synthetic tasks to generate."})
    train_task_difficulty: int = field(default=1, metadata={"help": "Synthetic task difficulty."})
    train_max_level: int | None = field(default=None, metadata={"help": "Keep file records with level <= this."})
    train_file_limit: int | None = field(default=None, metadata={"help": "Keep at most this many file records."})
    problem_column: str = "problem"
    answer_column: str = "answer"
    id_column: str = "id"
    eval_files: list[str] = field(default_factory=list, metadata={"help": "Held-out records for before/after eval."})
    eval_holdout: int = field(default=0, metadata={"help": "Questions held out of the training pool for eval."})
    eval_before_after: bool = field(default=False, metadata={"help": "Greedy eval on held-out questions before and after."})
    # --- outputs
    run_dir: str = field(default="runs/torl", metadata={"help": "Run directory (config, metrics, samples, checkpoints)."})
    dump_samples: bool = field(default=True, metadata={"help": "Write run_dir/samples/step_NNNNNN.jsonl every step."})
    dump_samples_max: int = field(
        default=0,
        metadata={"help": "At most this many responses dumped per step, over all processes: whole GRPO groups, a "
                          "seeded choice per step (0 = every response; at scale a step samples thousands)."},
    )
    dump_sample_ids: bool = field(
        default=False,
        metadata={"help": "Sample dumps also keep each response's prompt_ids and completion_ids as trained and its "
                          "loss_mask (1 = model token, 0 = interpreter), never re-tokenized, so `torl sft` or a "
                          "replay uses them exactly; off keeps dumps compact (text segments only)."},
    )
    torch_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (None: torch's default)."})
    max_minutes: float | None = field(
        default=None, metadata={"help": "Wall-clock budget for the training phase: save and stop when it runs out."}
    )
    resume: bool = field(default=False, metadata={"help": "Continue the run in run_dir from its last checkpoint."})
    # --- LoRA (PEFT): torl.train.lora builds the adapter config; TRL's GRPOTrainer wraps the model
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 = full fine-tuning (no adapter)."})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scaling numerator: updates scale by alpha / r."})
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the adapter input in training (rollouts never use it)."}
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Module names that get an adapter (e.g. q_proj v_proj), or all-linear (every linear "
                          "layer but the output head)."},
    )
    # --- end LoRA (PEFT)
    # Where the settings came from (set by parse_train_args, not settable): errors name the line to change.
    recipe: str | None = field(default=None, init=False)
    command_line: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as e:
            raise UserError(str(e)) from None
        # CLI overrides of list fields arrive as lists of strings; a YAML scalar becomes a one-item list.
        for name in ("train_files", "optional_train_files", "train_tasks", "eval_files", "lora_target_modules"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])


# TRL's name for the task's response budget: a recipe's max_completion_length is read as max_response_tokens.
TRL_BUDGET = "max_completion_length"
TRAIN_RENAMES = {
    TRL_BUDGET: "max_response_tokens",
    "eval_max_tokens": None,  # gone: the held-out eval runs the task itself, budget included
}


def parse_train_args(argv: list[str]):
    """Parse `--config recipe.yaml` plus overrides into `(TorlConfig, GRPOConfig)`.

    Every problem the user can fix (unknown key, unreadable YAML, a setting this machine cannot
    run) becomes one `UserError` line.
    """
    from trl import GRPOConfig

    torl_cfg, grpo_cfg = parse_recipe(argv, (TorlConfig, GRPOConfig), "train", renames=TRAIN_RENAMES)
    _sync_trl_budget(torl_cfg, grpo_cfg)
    if "--config" in argv:  # where each setting came from, for messages that name the line to change
        torl_cfg.recipe = argv[argv.index("--config") + 1]
    torl_cfg.command_line = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--") and a != "--config"]
    return torl_cfg, grpo_cfg


def parse_recipe(argv: list[str], dataclass_types: tuple, command: str, renames: dict[str, str] | None = None) -> tuple:
    """`--config recipe.yaml` plus `--<field> value` overrides into one instance of each dataclass
    (TRL's `TrlParser`), for `torl <command>`; a user's mistake is one `UserError` line. Old names
    (`DEPRECATED_NAMES`, plus the command's `renames`) are read as their new ones, with a note."""
    from trl import TrlParser

    argv = list(argv)
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise UserError(f"--config needs a path: torl {command} --config configs/<recipe>.yaml")
        if not Path(argv[at + 1]).is_file():
            raise UserError(f"config file not found: {argv[at + 1]} (recipes live in configs/)")
    _reject_gpu_only_flags_on_cpu(argv)
    argv = _read_old_names(argv, {**DEPRECATED_NAMES, **(renames or {})})
    parser = TrlParser(dataclass_types, allow_abbrev=False)  # a typo must not match a longer name

    def raise_user_error(message: str):  # argparse would print its 300-line usage and exit
        if message.startswith("unrecognized arguments:"):
            message = f"unknown setting {message.split(':', 1)[1].split()[0].lstrip('-')!r} on the command line"
        raise UserError(f"{message}; see `torl {command} --help`")

    parser.error = raise_user_error
    try:
        *configs, from_file, from_cli = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except ValueError as e:
        raise UserError(first_line(e)) from None
    unknown = [s for s in (from_file or []) + (from_cli or []) if s.startswith("--")]
    if unknown:
        where = "config file" if from_file else "command line"
        raise UserError(f"unknown setting {unknown[0].lstrip('-')!r} in the {where}; see `torl {command} --help`")
    return tuple(configs)


def _read_old_names(argv: list[str], renames: dict[str, str]) -> list[str]:
    """argv with old setting names replaced by new ones, on the command line and in the recipe (a
    renamed copy of the recipe replaces it in argv); one note per old name."""
    import tempfile

    import yaml

    out = []
    skip = False
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if skip or name in renames and renames[name] is None:  # a dropped setting and its value
            skip = not skip and not eq and name in renames
            if name in renames:
                _note_dropped(f"--{name}")
            continue
        if name in renames:
            note_deprecated(f"--{name}", f"--{renames[name]}")
            arg = f"--{renames[name]}{eq}{value}"
        out.append(arg)
    if "--config" not in out:
        return out
    at = out.index("--config") + 1
    try:
        recipe = yaml.safe_load(Path(out[at]).read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{out[at]}: invalid YAML ({first_line(e)})") from None
    old = [key for key in recipe if key in renames] if isinstance(recipe, dict) else []
    if not old:
        return out
    for key in old:
        if renames[key] is None:
            _note_dropped(key, f" (in {out[at]})")
            del recipe[key]
            continue
        if renames[key] in recipe:
            raise UserError(f"{out[at]} sets both {key} and {renames[key]}, which are one setting; keep {renames[key]}")
        note_deprecated(key, renames[key], f" (in {out[at]})")
        recipe[renames[key]] = recipe.pop(key)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="torl-recipe-", delete=False) as renamed:
        yaml.safe_dump(recipe, renamed, sort_keys=False)
    out[at] = renamed.name
    return out


def _note_dropped(name: str, where: str = "") -> None:
    import sys

    print(f"torl: {name} is no longer a setting{where} and is ignored: the held-out eval uses the task's "
          "max_response_tokens", file=sys.stderr)


def setting_source(c: TorlConfig, name: str) -> str:
    """Where `name` was set, for an error message: 'the command line (--name)', 'RECIPE line N', or the default."""
    spellings = [name] + [old for old, new in {**DEPRECATED_NAMES, **TRAIN_RENAMES}.items()
                          if new == name]
    for spelling in spellings:
        if spelling in c.command_line:
            return f"the command line (--{spelling})"
    if c.recipe:
        try:
            lines = Path(c.recipe).read_text().splitlines()
        except OSError:
            lines = []
        for number, line in enumerate(lines, 1):
            if line.split("#", 1)[0].strip().startswith(tuple(f"{s}:" for s in spellings)):
                return f"{c.recipe} line {number} ({line.split('#', 1)[0].strip()})"
    return f"the default (add {name}: ... to the recipe)"


def _reject_gpu_only_flags_on_cpu(argv: list[str]) -> None:
    """TrainingArguments fails deep inside on bf16/fp16 without a GPU; say it plainly first."""
    import torch

    if torch.cuda.is_available():
        return
    config_path = argv[argv.index("--config") + 1] if "--config" in argv else None
    settings = {}
    if config_path:
        import yaml

        try:
            settings = yaml.safe_load(Path(config_path).read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{config_path}: invalid YAML ({first_line(e)})") from None
        if not isinstance(settings, dict):
            raise UserError(f"{config_path}: a recipe must be a YAML mapping of setting: value")
    for key in ("bf16", "fp16", "use_vllm"):
        on = _cli_flag(argv, key)
        if on is None:  # not on the command line: the recipe's value counts
            on = settings.get(key) is True
        if on:
            raise UserError(f"{key} needs a GPU and none is visible; this recipe is for GPU nodes (try configs/demo-cpu.yaml)")


def _cli_flag(argv: list[str], key: str) -> bool | None:
    """The value of boolean `--key [true|false]` on the command line (last one wins), None if absent."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{key}":
            following = argv[i + 1].lower() if i + 1 < len(argv) else ""
            value = following not in ("false", "0", "no")
        elif arg.startswith(f"--{key}="):
            value = arg.split("=", 1)[1].lower() not in ("false", "0", "no")
    return value


def validate(torl_cfg: TorlConfig, grpo_cfg) -> None:
    """Check everything that needs no model: values, files, the engine/device match, the sandbox."""
    import torch

    c = torl_cfg
    task = task_spec(c)  # every task value, checked once, by TaskSpec
    _sync_trl_budget(c, grpo_cfg)
    if c.dump_samples_max < 0:
        raise UserError(f"dump_samples_max must be >= 0 (0 = dump every response), got {c.dump_samples_max}")
    if c.zero_signal_updates not in ZERO_SIGNAL_CHOICES:
        raise UserError(f"zero_signal_updates must be one of {', '.join(ZERO_SIGNAL_CHOICES)}, "
                        f"got {c.zero_signal_updates!r}")
    if c.dynamic_sampling_max_rounds < 0:
        raise UserError(f"dynamic_sampling_max_rounds must be >= 0, got {c.dynamic_sampling_max_rounds}")
    if c.dynamic_sampling:
        per_rank = grpo_cfg.per_device_train_batch_size * (grpo_cfg.steps_per_generation
                                                           or grpo_cfg.gradient_accumulation_steps)
        if per_rank % grpo_cfg.num_generations:
            raise UserError(f"dynamic_sampling needs whole groups on each process: per_device_train_batch_size x "
                            f"steps_per_generation = {per_rank} is not a multiple of num_generations "
                            f"({grpo_cfg.num_generations})")
    if c.engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {c.engine!r}")
    if c.sandbox not in SANDBOX_BACKENDS:
        raise UserError(f"sandbox must be one of {', '.join(SANDBOX_BACKENDS)}, got {c.sandbox!r}")
    if c.sandbox == "remote" and not c.sandbox_url:
        raise UserError("sandbox=remote needs sandbox_url (e.g. --sandbox_url http://host:8080)")
    if not 0.0 <= c.max_sandbox_error_ratio <= 1.0:
        raise UserError(f"max_sandbox_error_ratio must be in [0, 1], got {c.max_sandbox_error_ratio}")
    if not (c.train_files or c.train_tasks or any(glob.glob(p) for p in c.optional_train_files)):
        raise UserError("no training data: set train_files (JSONL/parquet) and/or train_tasks (synthetic kinds)")
    for pattern in c.train_files + c.eval_files:
        if not glob.glob(pattern):
            raise UserError(f"data file not found: {pattern}")
    if c.eval_before_after and not (c.eval_holdout > 0 or c.eval_files):
        raise UserError("eval_before_after needs held-out questions: set eval_holdout > 0 or eval_files")
    if c.engine == "vllm" and not torch.cuda.is_available():
        _check_vllm_runs_on_cpu()
    sharded = _sharded_launch()
    if c.engine == "transformers" and sharded:
        raise UserError(f"engine: transformers generates with the trainer's own module, which {sharded} shards across "
                        f"processes; change {setting_source(c, 'engine')} to engine: vllm (or auto)")
    if c.zero_signal_updates == "auto":  # resolved here, so the trainer and config.yaml see the mode that runs
        c.zero_signal_updates = zero_signal_mode(c)
    elif c.zero_signal_updates != "compute" and sharded:
        raise UserError(f"zero_signal_updates: {c.zero_signal_updates} cannot skip a micro-batch when {sharded} "
                        f"shards the parameters; change {setting_source(c, 'zero_signal_updates')} to "
                        "zero_signal_updates: auto (or compute)")
    if getattr(grpo_cfg, "use_vllm", False):
        raise UserError("use_vllm: torl runs its own rollout engine; set engine=vllm instead of use_vllm")
    check_lora(c)
    _check_sampler_correction(c, grpo_cfg)
    health_config(c)  # thresholds checked by HealthConfig itself, under their config names
    check_model(c.model)
    if task.protocol == "tool_calls":
        check_tool_template(task, c.model)


def _sync_trl_budget(c: TorlConfig, grpo_cfg) -> None:
    """TRL keeps its own copy of the response budget (max_completion_length): it follows
    max_response_tokens, unless a GRPOConfig built in Python set it to something else."""
    from trl import GRPOConfig

    trl_default = next(f.default for f in dataclasses.fields(GRPOConfig) if f.name == TRL_BUDGET)
    if grpo_cfg.max_completion_length not in (trl_default, c.max_response_tokens):
        raise UserError(f"{TRL_BUDGET} is {grpo_cfg.max_completion_length} but max_response_tokens is "
                        f"{c.max_response_tokens}: torl's name for the response budget is max_response_tokens; set "
                        "that (TRL's copy follows it)")
    grpo_cfg.max_completion_length = c.max_response_tokens


def task_spec(c: TaskSettings) -> TaskSpec:
    """The recipe's task spec; a bad task value is one UserError line."""
    try:
        return c.task()
    except ValueError as e:
        raise UserError(first_line(e)) from None


def check_tool_template(task: TaskSpec, model: str) -> None:
    """Protocol tool_calls: refuse, before any model loads, a chat template that is not prefix-preserving
    (the same probe the rollout runs; only the tokenizer is read)."""
    from transformers import AutoTokenizer

    from torl.engines.models import resolve_model
    from torl.tir.chat_tools import ToolTurnRenderer, check_prefix_preserving

    toolset = task.toolset()
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    except OSError:  # not readable from here (a hub id offline): the loop runs the same check before its first turn
        return
    check_prefix_preserving(ToolTurnRenderer(tokenizer, toolset.schemas()), toolset.names[0])


def health_config(c: TorlConfig) -> HealthConfig:
    """The alarms' thresholds from the `health_<name>` fields; a bad value is one line naming its field."""
    import re

    names = [f.name for f in dataclasses.fields(HealthConfig)]
    try:
        return HealthConfig(**{name: getattr(c, f"health_{name}") for name in names})
    except ValueError as e:
        message = str(e).removeprefix("HealthConfig: ")
        raise UserError(re.sub(rf"\b({'|'.join(names)})\b", r"health_\1", message)) from None


def zero_signal_mode(c: TorlConfig) -> str:
    """The `zero_signal_updates` mode that runs: auto is coast, or compute under ZeRO-3/FSDP."""
    if c.zero_signal_updates != "auto":
        return c.zero_signal_updates
    return "compute" if _sharded_launch() else "coast"


def _sharded_launch() -> str | None:
    """'ZeRO-3' or 'FSDP' when `accelerate launch` set this process up for it (it says so in the environment)."""
    import os

    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    if (os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
            and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"):
        return "ZeRO-3"
    return None


def _check_vllm_runs_on_cpu() -> None:
    """Without a GPU, engine=vllm works only with vLLM's CPU build (scripts/setup_vllm.sh)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        raise UserError("engine=vllm needs a GPU (none is visible) or vLLM's CPU build (bash scripts/setup_vllm.sh "
                        "and run from .venv-vllm); use engine=transformers on CPU") from None
    if not current_platform.is_cpu():
        raise UserError("engine=vllm needs a GPU and none is visible (this vLLM is not the CPU build); "
                        "use engine=transformers on CPU")


def _check_sampler_correction(c: TorlConfig, grpo_cfg) -> None:
    """importance_sampling_correction / mismatch_metrics, and TRL's IS settings when the correction is on."""
    from torl.train.rollout_engine import choose_engine
    from torl.train.update.mismatch import IS_MODES, SETTINGS, resolve

    for name in ("importance_sampling_correction", "mismatch_metrics"):
        if getattr(c, name) not in SETTINGS:
            raise UserError(f"{name} must be one of {', '.join(SETTINGS)}, got {getattr(c, name)!r}")
    correct, _ = resolve(c.importance_sampling_correction, c.mismatch_metrics, choose_engine(c.engine))
    if not correct:
        return
    why = "on" if c.importance_sampling_correction == "on" else f"on (auto, engine={choose_engine(c.engine)})"
    if not grpo_cfg.vllm_importance_sampling_correction:
        raise UserError(f"importance_sampling_correction is {why} but vllm_importance_sampling_correction is false; "
                        "torl's switch is importance_sampling_correction: set it to off instead")
    mode, low, high = (grpo_cfg.vllm_importance_sampling_mode, grpo_cfg.vllm_importance_sampling_clip_min,
                       grpo_cfg.vllm_importance_sampling_clip_max)
    if mode not in IS_MODES:
        raise UserError(f"vllm_importance_sampling_mode must be one of {', '.join(IS_MODES)}, got {mode!r}")
    if high is not None and not high > 0:
        raise UserError(f"vllm_importance_sampling_clip_max must be > 0 (the cap on IS weights), got {high}")
    if low is not None and low < 0:  # TRL itself checks low < high, and that a *_truncate mode has a bound
        raise UserError(f"vllm_importance_sampling_clip_min must be >= 0, got {low}")
    if grpo_cfg.loss_type == "vespo" and not mode.startswith("token"):
        raise UserError("loss_type=vespo needs vllm_importance_sampling_mode token_truncate or token_mask "
                        "(or importance_sampling_correction: off)")


def check_lora(c: TorlConfig) -> None:
    if c.lora_r < 0:
        raise UserError(f"lora_r must be >= 0 (0 = full fine-tuning, e.g. 16 for a LoRA adapter), got {c.lora_r}")
    if c.lora_r == 0:
        return
    if not c.lora_alpha > 0:
        raise UserError(f"lora_alpha must be > 0 (updates scale by lora_alpha / lora_r), got {c.lora_alpha}")
    if not 0.0 <= c.lora_dropout < 1.0:
        raise UserError(f"lora_dropout must be in [0, 1), got {c.lora_dropout}")
    targets = c.lora_target_modules
    if not targets or any(not t.strip() for t in targets):
        raise UserError("lora_target_modules must name modules (e.g. q_proj v_proj) or be all-linear")
    if "all-linear" in targets and len(targets) > 1:
        raise UserError(f"lora_target_modules: all-linear already means every linear layer; drop the other names "
                        f"or all-linear (got {' '.join(targets)})")


def check_model(name: str) -> None:
    from torl.engines.models import ModelNotFound, resolve_model

    try:
        resolve_model(name)
    except ModelNotFound as e:
        raise UserError(str(e)) from None


def check_sandbox(torl_cfg: TorlConfig) -> None:
    """Run the sandbox's health check once; an unusable sandbox is a user-fixable setup problem."""
    import asyncio

    from torl.sandbox.base import SandboxUnavailable

    async def probe() -> None:
        sandbox = make_sandbox(torl_cfg)
        try:
            await sandbox.health_check()
        finally:
            await sandbox.aclose()

    try:
        asyncio.run(probe())
    except SandboxUnavailable as e:
        raise UserError(f"sandbox unusable: {first_line(e)}") from None


def make_sandbox(torl_cfg: TorlConfig):
    """The sandbox the config asks for (construction only; the caller owns its lifetime)."""
    from torl.sandbox import SandboxConfig
    from torl.sandbox import make_sandbox as make

    if torl_cfg.sandbox == "remote":
        return make(url=torl_cfg.sandbox_url)
    options = {"timeout_s": torl_cfg.exec_timeout_s, "memory_mb": torl_cfg.exec_memory_mb}
    if torl_cfg.sandbox_workers is not None:
        options["workers"] = torl_cfg.sandbox_workers
    try:
        return make(SandboxConfig(**options))
    except ValueError as e:
        raise UserError(f"sandbox settings: {first_line(e)}") from None

