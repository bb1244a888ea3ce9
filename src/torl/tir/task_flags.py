"""The task spec's command-line flags, for `torl eval`, `torl rollout` and `torl data sample`.

One flag per `TaskSpec` field, named after it (`exec_timeout_s` -> `--exec-timeout-s`), with the
field's help; every flag defaults to None, which keeps the base spec's value (a run's
`task_spec.json` with `--run`, else the command's default spec). Old spellings (`--max-tokens`,
`--exec-timeout`) still work, with a one-line note.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from torl.tir.task import (
    DEPRECATED_NAMES,
    TaskSpec,
    note_deprecated,
    parse_template_setting,
    task_field_names,
)

# Fields whose flag takes a comma-separated list (tools: python,search); extra_stop repeats instead,
# since a stop string may hold a comma.
_LIST_FIELDS = ("tools", "tool_modules", "max_calls_per_tool")
_OLD_FLAGS = ("exec_timeout", "max_tokens")  # what torl eval / rollout / data sample called two fields


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_task_arguments(parser: argparse.ArgumentParser, base: str) -> None:
    """Add one flag per task field to `parser`; `base` says where unset fields come from (for --help)."""
    group = parser.add_argument_group("task spec", f"Each flag overrides one field of the task spec ({base}).")
    for f in dataclasses.fields(TaskSpec):
        kind = f.default
        options: dict[str, Any] = {"dest": f.name, "default": None, "help": f.metadata["help"]}
        if isinstance(kind, bool):
            options["action"] = argparse.BooleanOptionalAction
        elif f.name == "extra_stop":
            options["action"] = "append"
        elif f.name in _LIST_FIELDS:
            options["type"] = _comma_list
            options["metavar"] = "A,B"
        elif isinstance(kind, (int, float)):
            options["type"] = type(kind)
        group.add_argument(flag_name(f.name), **options)
    for old in _OLD_FLAGS:
        new = next(f for f in dataclasses.fields(TaskSpec) if f.name == DEPRECATED_NAMES[old])
        group.add_argument(flag_name(old), dest=new.name, type=type(new.default), default=None, action=_Deprecated,
                           help=argparse.SUPPRESS)


def task_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The task fields set on the command line (None = not given: keep the base spec's)."""
    given = {name: getattr(args, name) for name in task_field_names() if getattr(args, name, None) is not None}
    if "template" in given:
        given["template"] = parse_template_setting(given["template"])
    return given


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


class _Deprecated(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        note_deprecated(option_string, flag_name(self.dest))
        setattr(namespace, self.dest, values)
