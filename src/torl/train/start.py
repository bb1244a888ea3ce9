"""Where a training run starts: `--model` may name a torl run directory (an SFT run, or an RL run) or
one of its checkpoints; RL then starts from those weights under that run's task spec.

The run's `task_spec.json` (every task field: template and its stops, C, budget, call trigger, sandbox
limits, reward, tools) replaces the recipe's task fields, so SFT→RL trains under exactly the protocol the SFT data was rendered and
masked under; every field that changes is printed, and the start is recorded in the new run
(`config.yaml` `start:`, summary.json, README.txt).
"""

from __future__ import annotations

import sys
from pathlib import Path

from torl.errors import UserError
from torl.tir.task import TaskSpec, run_model, task_field_names


def run_root_of(model: str) -> Path | None:
    """The run directory `model` names (the directory itself or checkpoints/checkpoint-N in it), or None."""
    path = Path(model).expanduser()
    if (path / "task_spec.json").is_file():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "task_spec.json").is_file():
        return path.parent.parent
    return None


def resolve_start(torl_cfg) -> dict | None:
    """If `torl_cfg.model` names a run, point it at that run's weights and adopt its task spec.

    Returns the record of the start (None for a plain model name or checkpoint directory).
    """
    root = run_root_of(torl_cfg.model)
    if root is None:
        return None
    try:
        spec = TaskSpec.load(root)
        model = run_model(root) if Path(torl_cfg.model).expanduser().resolve() == root.resolve() else torl_cfg.model
    except ValueError as e:
        raise UserError(f"--model {torl_cfg.model}: {e}") from None
    changed = {}
    for name in task_field_names():  # the recipe spells every task field as the spec does
        value = _as_setting(name, getattr(spec, name))
        if getattr(torl_cfg, name) != value:
            changed[name] = {"from": getattr(torl_cfg, name), "to": value}
            setattr(torl_cfg, name, value)
    given = torl_cfg.model
    torl_cfg.model = model
    for name, change in changed.items():
        print(f"torl: {name}: {change['from']!r} -> {change['to']!r} (the task spec of {root})", file=sys.stderr)
    print(f"torl: starting from {model} (run {root}) under its task spec", file=sys.stderr)
    return {"given": given, "run": str(root), "model": model, "task_spec": spec.to_dict(), "changed": changed}


def _as_setting(name: str, value):
    """A spec value as a recipe writes it (lists for tuples, name=N items for the per-tool budgets)."""
    if name == "max_calls_per_tool":
        return [f"{tool}={count}" for tool, count in value.items()]
    return list(value) if isinstance(value, tuple) else value
