"""The task spec: everything that defines how a trajectory is produced and scored, in one place.

`TaskSpec` is the single definition of the tool-use protocol — like a verifiers Environment, the one
object that says what a task is: the prompt template and its stop strings, the tools and C, the
sandbox limits, how much of an observation the model sees, and the reward scheme. Each field's
name, default, help and check live here and nowhere else:

- training and SFT recipes spell the fields the same way (`TaskSettings`, which `TorlConfig` and
  `SftSettings` extend: list-typed for the recipe parser, converted by `TaskSpec.from_settings`);
- `torl eval`, `torl rollout` and `torl data sample` get one flag per field, named after it
  (`torl.tir.task_flags`);
- a training run writes its spec to `RUN_DIR/task_spec.json`; `torl eval --run RUN_DIR` and `torl
  rollout --run RUN_DIR` read it back, and any flag given on their command line overrides that one
  field (the results record which).

Decoding settings (temperature, top-p, seed) are not part of the task: training samples at
T = 1, evaluation greedily, from the same spec (`TaskSpec.rollout_config` joins the two).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import field
from pathlib import Path
from typing import Any

from torl.errors import first_line
from torl.run_layout import RunLayout
from torl.tir.loop import CALL_TRIGGERS, PROTOCOLS, RolloutConfig
from torl.tir.tool_turns import TOOL_CALL_TRIGGERS

# Written to task_spec.json only under protocol tool_calls, so a code_blocks spec reads as it always did.
_TOOL_CALL_FIELDS = ("protocol", "tools", "search_corpus", "max_calls_per_tool", "tool_modules")

# Old spellings of task fields, still read (recipes, command lines) with a one-line note: old -> new.
DEPRECATED_NAMES = {
    "sandbox_timeout_s": "exec_timeout_s",     # TorlConfig / SftSettings before the one vocabulary
    "sandbox_memory_mb": "exec_memory_mb",
    "stop_strings": "extra_stop",
    "exec_timeout": "exec_timeout_s",          # EvalConfig, torl eval/rollout/data sample --exec-timeout
    "max_tokens": "max_response_tokens",       # torl eval/rollout/data sample --max-tokens
}


def _help(text: str) -> dict:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    # Defaults: ToRL's protocol (base-model template, C = 1, its GPU budget); a training run records its own.
    template: str | dict = field(default="torl", metadata=_help(
        "Prompt template: a built-in name (torl, torl_think, torl_fewshot, chat, chat_tools, chat_tools_fewshot) or a "
        "custom one as a mapping {name, turn with {question}, preamble, kind, separator, system, stop, examples} "
        "(on a command line as JSON); its stop strings apply."))
    max_tool_calls: int = field(default=1, metadata=_help(
        "C: executed tool calls per response (0 = plain reasoning); code after the budget is not run."))
    extra_stop: tuple[str, ...] = field(default=(), metadata=_help(
        "Strings that end a response beyond the template's own (e.g. '\\nUser:' after a few-shot prompt)."))
    max_response_tokens: int = field(default=3072, metadata=_help(
        "The whole response budget, interpreter tokens included (ToRL: 3072)."))
    max_observation_chars: int = field(default=512, metadata=_help(
        "Head+tail of the interpreter output the model sees (characters)."))
    exec_timeout_s: float = field(default=10.0, metadata=_help("Wall-clock limit per code block (seconds)."))
    exec_memory_mb: int = field(default=1024, metadata=_help("Memory limit per code block (MiB, >= 32)."))
    session: bool = field(default=False, metadata=_help(
        "One interpreter session per trajectory (Jupyter-like); false: each block runs alone."))
    call_trigger: str = field(default="output_fence", metadata=_help(
        "What runs a call. code_blocks: output_fence (the model writes ```output, ToRL) | block_close (its closing "
        "fence). tool_calls: call_end (</tool_call>; the default there) | turn_end (the model's end of turn)."))
    reward_scheme: str = field(default="torl", metadata=_help("torl (+1/-1) | binary (1/0) | torl_exec_penalty"))
    protocol: str = field(default="code_blocks", metadata=_help(
        "How the model calls tools: code_blocks (ToRL's ```python / ```output) | tool_calls (the chat template's "
        "hermes <tool_call> JSON, results as tool messages; torl.tir.chat_tools)."))
    tools: tuple[str, ...] = field(default=("python",), metadata=_help(
        "tool_calls: the tools by name: python, search, or ones registered with torl.tools.register_tool."))
    search_corpus: str | None = field(default=None, metadata=_help(
        "The search tool's JSONL corpus ({\"text\", \"title\"?, \"id\"?} per line)."))
    max_calls_per_tool: dict[str, int] = field(default_factory=dict, metadata=_help(
        "tool_calls: per-tool budgets within C, as name=N (e.g. search=2)."))
    error_marker: bool = field(default=False, metadata=_help(
        "Wrap a failed call's output in <error>...</error> (both protocols)."))
    tool_modules: tuple[str, ...] = field(default=(), metadata=_help(
        "tool_calls: Python modules (dotted names or .py files) imported first, so the tools they register with "
        "torl.tools.register_tool can be named in tools."))

    def __post_init__(self) -> None:
        # The one check of every task value; callers turn the ValueError into their own one-line error.
        set_ = object.__setattr__
        set_(self, "extra_stop", tuple(self.extra_stop))
        set_(self, "tools", tuple(self.tools))
        set_(self, "tool_modules", tuple(self.tool_modules))
        set_(self, "max_calls_per_tool", dict(self.max_calls_per_tool))
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.max_tool_calls < 0:
            raise ValueError(f"max_tool_calls must be >= 0 (C, the tool-call budget), got {self.max_tool_calls}")
        if self.max_response_tokens < 1:
            raise ValueError(f"max_response_tokens must be >= 1, got {self.max_response_tokens}")
        if self.max_observation_chars < 1:
            raise ValueError(f"max_observation_chars must be >= 1, got {self.max_observation_chars}")
        if not self.exec_timeout_s > 0:
            raise ValueError(f"exec_timeout_s must be > 0, got {self.exec_timeout_s}")
        if self.exec_memory_mb < 32:
            raise ValueError(f"exec_memory_mb must be >= 32, got {self.exec_memory_mb}")
        from torl.reward.schemes import REWARD_SCHEMES

        if self.reward_scheme not in REWARD_SCHEMES:
            raise ValueError(f"reward_scheme must be one of {', '.join(REWARD_SCHEMES)}, got {self.reward_scheme!r}")
        template = self.prompt_template()  # an unknown name or a bad mapping fails here, in one line
        if self.protocol == "code_blocks":
            if self.call_trigger not in CALL_TRIGGERS:
                raise ValueError(f"call_trigger must be one of {', '.join(CALL_TRIGGERS)}, got {self.call_trigger!r}")
            return
        if self.call_trigger == "output_fence":  # the field's default: under tool_calls it means the call's end
            set_(self, "call_trigger", "call_end")
        if self.call_trigger not in TOOL_CALL_TRIGGERS:
            raise ValueError(f"call_trigger must be one of {', '.join(TOOL_CALL_TRIGGERS)} under protocol "
                             f"tool_calls, got {self.call_trigger!r}")
        if not self.tools:
            raise ValueError("protocol tool_calls needs at least one tool (tools: [python])")
        if template.kind != "chat":
            raise ValueError(f"template {self.template!r} is a text template; protocol tool_calls needs a chat "
                             "template (e.g. chat_tools)")
        self.toolset()  # unknown tools, a missing corpus, a module that fails to import or a bad budget fail here

    def prompt_template(self):
        from torl.tir.templates import (
            get_template,
            template_from_config,
            template_names,
        )

        if not isinstance(self.template, dict):
            if self.template not in template_names():
                raise ValueError(f"unknown template {self.template!r}; choose one of {', '.join(template_names())}, "
                                 "or give a mapping")
            return get_template(self.template)
        try:
            return template_from_config(self.template, register=False)
        except (ValueError, TypeError) as e:
            raise ValueError(f"template mapping: {first_line(e)} (keys: name, turn with {{question}}, preamble, "
                             "kind, separator, system, stop, examples: [{question, solution}])") from None

    def toolset(self):
        """The task's tools (protocol tool_calls), built-ins configured from this spec."""
        from torl.tools.toolset import build_toolset, import_tool_modules

        import_tool_modules(self.tool_modules)
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
        """The TIR loop's settings: this task joined with the given decoding."""
        return RolloutConfig(
            max_tool_calls=self.max_tool_calls,
            max_response_tokens=max_response_tokens or self.max_response_tokens,
            temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, logprobs=logprobs,
            max_observation_chars=self.max_observation_chars,
            exec_timeout_s=self.exec_timeout_s, exec_memory_mb=self.exec_memory_mb,
            stop_strings=self.stop_strings, session=self.session, call_trigger=self.call_trigger,
            on_sandbox_error=on_sandbox_error, protocol=self.protocol, error_marker=self.error_marker,
            toolset=self.toolset() if self.protocol == "tool_calls" else None)

    # -- from recipes and command lines
    @classmethod
    def from_settings(cls, settings: Any) -> TaskSpec:
        """The spec from anything that has the task fields as attributes (`TaskSettings`, a recipe's
        config): list fields become tuples, `max_calls_per_tool` items `name=N` a mapping."""
        values = {name: getattr(settings, name) for name in task_field_names()}
        values["max_calls_per_tool"] = parse_tool_budgets(values["max_calls_per_tool"])
        return cls(**values)

    # -- persistence
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("extra_stop", "tools", "tool_modules"):
            d[name] = list(d[name])
        # A code_blocks spec is written as before the tool_calls protocol existed (its defaults load back).
        if self.protocol == "code_blocks":
            for name in _TOOL_CALL_FIELDS:
                d.pop(name)
        elif not self.tool_modules:
            d.pop("tool_modules")
        if not self.error_marker:
            d.pop("error_marker")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        known = set(task_field_names())
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
        """A copy with the given fields changed (None = keep), and {field: {from, to}} for each change.

        Switching the protocol without naming a template or call trigger keeps the ones that still
        apply: a text template gives way to `chat_tools` (a text template cannot call tools), and a
        trigger of the other protocol to the new one's default."""
        changes = {k: v for k, v in changes.items() if v is not None}
        protocol = changes.get("protocol", self.protocol)
        if protocol != self.protocol:
            if protocol == "tool_calls" and "template" not in changes and self.prompt_template().kind != "chat":
                changes["template"] = "chat_tools"
            if "call_trigger" not in changes:
                changes["call_trigger"] = "output_fence" if protocol == "code_blocks" else "call_end"
        if "max_calls_per_tool" in changes:
            changes["max_calls_per_tool"] = parse_tool_budgets(changes["max_calls_per_tool"])
        new = dataclasses.replace(self, **changes)
        diff = {k: {"from": getattr(self, k), "to": getattr(new, k)} for k in changes
                if getattr(self, k) != getattr(new, k)}
        return new, diff


def resolve_task(run: str | Path | None, overrides: dict[str, Any], base: TaskSpec | None = None,
                 ) -> tuple[TaskSpec, dict[str, dict[str, Any]]]:
    """The spec a command runs under: the run's recorded one (or `base`, else the defaults) with the
    given fields changed, and what changed; ValueError for a bad run directory or value."""
    spec = TaskSpec.load(run) if run else (base or TaskSpec())
    return spec.override(**overrides)


def task_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TaskSpec)]


def task_field(name: str) -> dataclasses.Field:
    """A recipe dataclass field for task field `name`: TaskSpec's default and help (tuples as lists)."""
    spec_field = next(f for f in dataclasses.fields(TaskSpec) if f.name == name)
    meta = {"help": spec_field.metadata["help"]}
    if spec_field.default_factory is not dataclasses.MISSING:  # max_calls_per_tool: name=N items in a recipe
        return field(default_factory=list, metadata=meta)
    if isinstance(spec_field.default, tuple):
        default = list(spec_field.default)
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=spec_field.default, metadata=meta)


def parse_tool_budgets(value: Any) -> dict[str, int]:
    """`max_calls_per_tool` as recipes and flags write it (['search=2'], 'search=2,python=1') or a mapping."""
    if isinstance(value, dict):
        return dict(value)
    items = value.split(",") if isinstance(value, str) else list(value or ())
    budgets = {}
    for item in items:
        name, _, count = str(item).partition("=")
        if not name.strip() or not count.strip().isdigit():
            raise ValueError(f"max_calls_per_tool wants name=N (e.g. search=2), got {item!r}")
        budgets[name.strip()] = int(count)
    return budgets


@dataclasses.dataclass
class TaskSettings:
    """The task fields as recipes spell them (`TorlConfig` and `SftSettings` extend this): TaskSpec's
    names, defaults and help, with lists where TaskSpec keeps tuples so TRL's recipe parser can read
    them. `task()` checks them, all in TaskSpec."""

    template: str = task_field("template")
    max_tool_calls: int = task_field("max_tool_calls")
    extra_stop: list[str] = task_field("extra_stop")  # noqa: RUF009 - returns a dataclasses.field
    max_response_tokens: int = task_field("max_response_tokens")
    max_observation_chars: int = task_field("max_observation_chars")
    exec_timeout_s: float = task_field("exec_timeout_s")
    exec_memory_mb: int = task_field("exec_memory_mb")
    session: bool = task_field("session")
    call_trigger: str = task_field("call_trigger")
    reward_scheme: str = task_field("reward_scheme")
    protocol: str = task_field("protocol")
    tools: list[str] = task_field("tools")  # noqa: RUF009 - returns a dataclasses.field
    search_corpus: str | None = task_field("search_corpus")
    max_calls_per_tool: list[str] = task_field("max_calls_per_tool")  # noqa: RUF009 - returns a dataclasses.field
    error_marker: bool = task_field("error_marker")
    tool_modules: list[str] = task_field("tool_modules")  # noqa: RUF009 - returns a dataclasses.field

    def __post_init__(self) -> None:
        # A YAML scalar, or one command-line value, where a list is expected becomes a one-item list.
        for name in ("extra_stop", "tools", "max_calls_per_tool", "tool_modules"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
        self.template = parse_template_setting(self.template)

    def task(self) -> TaskSpec:
        """These settings as a TaskSpec; ValueError (one line) for a bad value."""
        return TaskSpec.from_settings(self)


def parse_template_setting(value: str | dict) -> str | dict:
    """A template as a setting gives it: a name, a mapping, or a mapping as JSON (`--template '{"name": ...}'`)."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError as e:
            raise ValueError(f"template: not a template name nor a JSON mapping ({e})") from None
    return value


def note_deprecated(old: str, new: str, where: str = "") -> None:
    """The one-line note for an old spelling that is still read."""
    print(f"torl: {old} is deprecated{where}; its name is now {new}", file=sys.stderr)



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
