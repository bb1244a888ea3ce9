"""Where a training run starts: `--model` may name a torl run directory (an SFT run, or an RL run) or
one of its checkpoints; RL then starts from those weights under that run's task spec.

The run's `task_spec.json` (template and its stops, C, call trigger, sandbox limits, reward) replaces
the recipe's task fields, so SFT→RL trains under exactly the protocol the SFT data was rendered and
masked under; every field that changes is printed, and the start is recorded in the new run
(`config.yaml` `start:`, summary.json, README.txt).
"""

from __future__ import annotations

import sys
from pathlib import Path

from torl.errors import UserError
from torl.tir.task import TaskSpec, run_model

# TaskSpec field -> TorlConfig field (the inverse of session.task_spec's mapping)
SPEC_FIELDS = {"template": "template", "max_tool_calls": "max_tool_calls", "extra_stop": "stop_strings",
               "call_trigger": "call_trigger", "exec_timeout_s": "sandbox_timeout_s",
               "exec_memory_mb": "sandbox_memory_mb", "reward_scheme": "reward_scheme", "protocol": "protocol",
               "tools": "tools"}


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
    defaults = TaskSpec()
    for name in ("max_observation_chars", "session"):
        if getattr(spec, name) != getattr(defaults, name):
            raise UserError(f"{root}/task_spec.json sets {name}={getattr(spec, name)!r}, which torl train cannot "
                            f"set; RL from this run would use another protocol")
    changed = {}
    for spec_name, cfg_name in SPEC_FIELDS.items():
        value = getattr(spec, spec_name)
        value = list(value) if isinstance(value, tuple) else value
        if getattr(torl_cfg, cfg_name) != value:
            changed[cfg_name] = {"from": getattr(torl_cfg, cfg_name), "to": value}
            setattr(torl_cfg, cfg_name, value)
    given = torl_cfg.model
    torl_cfg.model = model
    for name, change in changed.items():
        print(f"torl: {name}: {change['from']!r} -> {change['to']!r} (the task spec of {root})", file=sys.stderr)
    print(f"torl: starting from {model} (run {root}) under its task spec", file=sys.stderr)
    return {"given": given, "run": str(root), "model": model, "task_spec": spec.to_dict(), "changed": changed}
