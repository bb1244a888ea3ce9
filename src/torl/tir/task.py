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
from torl.tir.loop import CALL_TRIGGERS, PROTOCOLS, RolloutConfig
from torl.tir.tool_turns import TOOL_CALL_TRIGGERS

_TOOL_CALL_FIELDS = ("protocol", "tools", "search_corpus", "max_calls_per_tool")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    # Defaults: ToRL's evaluation protocol (base-model template, C = 1); a training run records its own.
    template: str | dict = "torl"             # a built-in template's name, or a custom one as a mapping
                                              # (torl.tir.templates.template_from_config); its stop strings apply
    max_tool_calls: int = 1                   # C: executed calls per response
    extra_stop: tuple[str, ...] = ()          # stop strings beyond the template's own
    max_response_tokens: int = 3072           # whole response budget, interpreter tokens included (the GPU recipes')
    max_observation_chars: int = 512          # head+tail of the interpreter output the model sees
    exec_timeout_s: float = 10.0              # wall-clock limit per code block
    exec_memory_mb: int = 1024                # memory limit per code block
    session: bool = False                     # one interpreter session per trajectory (Jupyter-like)
    call_trigger: str = "output_fence"        # what runs a block: the model's ```output (ToRL) | block_close
    reward_scheme: str = "torl"               # torl (+1/-1) | binary | torl_exec_penalty
    # How the model calls tools: code_blocks (ToRL's ```python / ```output) | tool_calls (the chat template's
    # hermes <tool_call> JSON, results as tool messages: torl.tir.chat_tools, torl.tir.tool_turns)
    protocol: str = "code_blocks"
    tools: tuple[str, ...] = ("python",)      # tool_calls: the tools by name (torl.tools: python, search, registered)
    search_corpus: str | None = None          # the search tool's JSONL corpus ({"text", "title"?, "id"?} per line)
    max_calls_per_tool: dict[str, int] = dataclasses.field(default_factory=dict)  # per-tool budgets within C
    error_marker: bool = False                # a failed call's output inside <error>...</error> (both protocols)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_stop", tuple(self.extra_stop))
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "max_calls_per_tool", dict(self.max_calls_per_tool))
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.protocol == "tool_calls":
            if self.call_trigger == "output_fence":  # the field's default: under tool_calls it means the call's end
                object.__setattr__(self, "call_trigger", "call_end")
            if self.call_trigger not in TOOL_CALL_TRIGGERS:
                raise ValueError(f"call_trigger must be one of {', '.join(TOOL_CALL_TRIGGERS)} under protocol "
                                 f"tool_calls, got {self.call_trigger!r}")
            if not self.tools:
                raise ValueError("protocol tool_calls needs at least one tool (tools: [python])")
            if self.prompt_template().kind != "chat":
                raise ValueError(f"template {self.template!r} is a text template; protocol tool_calls needs a chat "
                                 "template (e.g. --template chat_tools)")
            self.toolset()  # unknown tools, a missing corpus or a bad budget fail here, in one line
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0 (C, the tool-call budget), got {self.max_tool_calls}")
        if self.max_response_tokens < 1 or self.max_observation_chars < 1:
            raise ValueError("max_response_tokens and max_observation_chars must be >= 1")
        if not self.exec_timeout_s > 0 or self.exec_memory_mb < 32:
            raise ValueError("exec_timeout_s must be > 0 and exec_memory_mb >= 32")
        if self.protocol == "code_blocks" and self.call_trigger not in CALL_TRIGGERS:
            raise ValueError(f"call_trigger must be one of {', '.join(CALL_TRIGGERS)}, got {self.call_trigger!r}")
        self.prompt_template()  # an unknown template name fails here, with the known names
        from torl.reward.schemes import REWARD_SCHEMES

        if self.reward_scheme not in REWARD_SCHEMES:
            raise ValueError(f"reward_scheme must be one of {', '.join(REWARD_SCHEMES)}, got {self.reward_scheme!r}")

    def prompt_template(self):
        from torl.tir.templates import get_template, template_from_config

        if isinstance(self.template, dict):
            return template_from_config(self.template, register=False)
        return get_template(self.template)

    def toolset(self):
        """The task's tools (protocol tool_calls), built-ins configured from this spec."""
        from torl.tools.toolset import build_toolset

        return build_toolset(self.tools, exec_timeout_s=self.exec_timeout_s, exec_memory_mb=self.exec_memory_mb,
                             max_observation_chars=self.max_observation_chars, search_corpus=self.search_corpus,
                             max_calls=self.max_calls_per_tool)

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
            on_sandbox_error=on_sandbox_error, protocol=self.protocol, error_marker=self.error_marker,
            toolset=self.toolset() if self.protocol == "tool_calls" else None)

    # -- persistence
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["extra_stop"] = list(self.extra_stop)
        d["tools"] = list(self.tools)
        # A code_blocks spec is written as before the tool_calls protocol existed (its defaults load back).
        if self.protocol == "code_blocks":
            for name in _TOOL_CALL_FIELDS:
                d.pop(name)
        if not self.error_marker:
            d.pop("error_marker")
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
    """The model a training run produced: RUN_DIR/merged for a finished LoRA run (its checkpoints hold
    only the adapter), else the last checkpoint (a LoRA one loads as base + adapter, `torl.engines.models.merged_checkpoint`)."""
    merged = Path(run_dir) / "merged"
    checkpoints = RunLayout(run_dir).checkpoint_dirs()
    if (merged / "config.json").is_file() and (  # not one left behind by a run resumed since
            not checkpoints or merged.stat().st_mtime >= checkpoints[-1].stat().st_mtime):
        return str(merged)
    if not checkpoints:
        raise ValueError(f"{run_dir} has no checkpoints/checkpoint-N: the run saved no model yet")
    return str(checkpoints[-1])
