"""The task spec: everything that defines how a trajectory is produced and scored, in one place.

Training, evaluation and `torl rollout` all build their TIR loop from a `TaskSpec`, so a model is
evaluated with exactly the protocol it was trained with: the prompt template and its stop strings,
C, the sandbox limits, how much of an observation the model sees, and the reward scheme. A training
run writes its spec to `RUN_DIR/task_spec.json`; `torl eval --run RUN_DIR` and `torl rollout --run
RUN_DIR` read it back, and any flag given on their command line overrides that one field (the
results record which).

Decoding settings (temperature, top-p, seed) are not part of the task: training samples at
T = 1, evaluation greedily, from the same spec.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torl.run_layout import RunLayout
from torl.tir.loop import CALL_TRIGGERS, RolloutConfig


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    # Defaults: ToRL's evaluation protocol (base-model template, C = 1); a training run records its own.
    template: str = "torl"                    # prompt template (torl.tir.templates); its stop strings apply
    max_tool_calls: int = 1                   # C: executed calls per response
    extra_stop: tuple[str, ...] = ()          # stop strings beyond the template's own
    max_response_tokens: int = 2048           # whole response budget, interpreter tokens included
    max_observation_chars: int = 512          # head+tail of the interpreter output the model sees
    exec_timeout_s: float = 10.0              # wall-clock limit per code block
    exec_memory_mb: int = 1024                # memory limit per code block
    session: bool = False                     # one interpreter session per trajectory (Jupyter-like)
    call_trigger: str = "output_fence"        # what runs a block: the model's ```output (ToRL) | block_close
    reward_scheme: str = "torl"               # torl (+1/-1) | binary | torl_exec_penalty

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_stop", tuple(self.extra_stop))
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0 (C, the tool-call budget), got {self.max_tool_calls}")
        if self.max_response_tokens < 1 or self.max_observation_chars < 1:
            raise ValueError("max_response_tokens and max_observation_chars must be >= 1")
        if not self.exec_timeout_s > 0 or self.exec_memory_mb < 32:
            raise ValueError("exec_timeout_s must be > 0 and exec_memory_mb >= 32")
        if self.call_trigger not in CALL_TRIGGERS:
            raise ValueError(f"call_trigger must be one of {', '.join(CALL_TRIGGERS)}, got {self.call_trigger!r}")
        self.prompt_template()  # an unknown template name fails here, with the known names
        from torl.reward.schemes import REWARD_SCHEMES

        if self.reward_scheme not in REWARD_SCHEMES:
            raise ValueError(f"reward_scheme must be one of {', '.join(REWARD_SCHEMES)}, got {self.reward_scheme!r}")

    def prompt_template(self):
        from torl.tir.templates import get_template

        return get_template(self.template)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Every string that ends a response: the template's (a few-shot prompt's next turn) and extra ones."""
        return tuple(dict.fromkeys(self.prompt_template().stop + self.extra_stop))

    def rollout_config(self, *, temperature: float, top_p: float = 1.0, top_k: int = -1, seed: int | None = None,
                       logprobs: bool = True, max_response_tokens: int | None = None,
                       on_sandbox_error: str = "mark") -> RolloutConfig:
        """The TIR loop's settings for this task with the given decoding."""
        return RolloutConfig(
            max_tool_calls=self.max_tool_calls,
            max_response_tokens=max_response_tokens or self.max_response_tokens,
            temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, logprobs=logprobs,
            max_observation_chars=self.max_observation_chars,
            exec_timeout=self.exec_timeout_s, exec_memory_mb=self.exec_memory_mb,
            stop_strings=self.stop_strings, session=self.session, call_trigger=self.call_trigger,
            on_sandbox_error=on_sandbox_error)

    # -- persistence
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["extra_stop"] = list(self.extra_stop)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown task spec fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def save(self, run_dir: str | Path) -> Path:
        path = RunLayout(run_dir).task_spec
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> TaskSpec:
        """The spec a training run recorded; ValueError naming the file when it is missing or bad."""
        path = RunLayout(run_dir).task_spec
        if not path.is_file():
            raise ValueError(f"{path} not found: is {run_dir} a torl training run directory?")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path} is not a valid task spec: {e}") from None

    def override(self, **changes: Any) -> tuple[TaskSpec, dict[str, dict[str, Any]]]:
        """A copy with the given fields changed (None = keep), and {field: {from, to}} for each change."""
        changes = {k: v for k, v in changes.items() if v is not None}
        new = dataclasses.replace(self, **changes)
        diff = {k: {"from": getattr(self, k), "to": getattr(new, k)} for k in changes
                if getattr(self, k) != getattr(new, k)}
        return new, diff


def run_model(run_dir: str | Path) -> str:
    """The model a training run produced: its merged model (a LoRA run's, `RUN_DIR/merged`), else its last checkpoint."""
    merged = Path(run_dir) / "merged"
    if (merged / "config.json").is_file():
        return str(merged)
    checkpoints = RunLayout(run_dir).checkpoint_dirs()
    if not checkpoints:
        raise ValueError(f"{run_dir} has no checkpoints/checkpoint-N: the run saved no model yet")
    return str(checkpoints[-1])
