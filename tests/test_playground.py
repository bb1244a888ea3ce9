"""The playground's documented example shows the protocol: by default `torl rollout` with the small
model uses a prompt and trigger it follows (the CPU demo's), with a short budget, and it calls Python."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from torl.tir import commands
from torl.tir.task import TaskSpec

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is 48213 * 9371? Use Python."


def parser():
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers())
    return p


def documented_example() -> list[str]:
    """The README's `torl rollout` example, with its placeholder question filled in."""
    line = next(m.group(1) for m in re.finditer(r"`(torl rollout [^`]*)`", (REPO / "README.md").read_text()))
    return [QUESTION if token == "…" else token for token in shlex.split(line)[1:]]


def test_the_small_model_defaults_are_the_demo_protocol(monkeypatch):
    seen = {}

    async def capture(args, task):
        seen.update(task=task, device=args.device)
        from torl.tir.trajectory import Trajectory

        return Trajectory(prompt_ids=[], text=""), None

    monkeypatch.setattr(commands, "_rollout", capture)
    monkeypatch.setattr(commands, "_print_readable", lambda *a: None)
    args = parser().parse_args(documented_example())
    assert commands.run_rollout(args) == 0
    assert seen["task"] == TaskSpec(template="torl_fewshot", call_trigger="block_close", max_response_tokens=256,
                                    max_tool_calls=2)
    args = parser().parse_args(["rollout", "--model", "org/other", "--question", "q", "--device", "cpu"])
    commands.run_rollout(args)
    assert (seen["task"].template, seen["task"].call_trigger, seen["task"].max_response_tokens) == \
        ("torl", "output_fence", commands.CPU_BUDGET)


def test_rollout_help_lists_the_templates(capsys):
    from torl.tir.templates import template_names

    with pytest.raises(SystemExit):
        parser().parse_args(["rollout", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in template_names())


@pytest.mark.slow
def test_the_documented_example_calls_python_and_answers(capsys):
    """SmolLM2-135M, greedy, the README's command: it writes a block, the sandbox runs it, it boxes the result."""
    args = parser().parse_args([*documented_example(), "--answer", str(48213 * 9371), "--json"])
    assert commands.run_rollout(args) == 0
    trajectory = json.loads(capsys.readouterr().out)
    assert len(trajectory["calls"]) >= 1 and trajectory["calls"][0]["result"]["status"] == "ok"
    assert str(48213 * 9371) in trajectory["calls"][0]["result"]["stdout"]
    assert trajectory["reward"]["correct"] is True
