"""The TIR loop against a scripted engine and an in-process fake sandbox (no model, no isolation)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import traceback

import pytest

from torl.engines.scripted import ScriptedEngine, ToyTokenizer, scripted_logprob
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.loop import RolloutConfig, SandboxFailure, rollout, rollout_many
from torl.tir.trajectory import Trajectory


class FakeSandbox(Sandbox):
    """Runs trusted test snippets in-process. `fail_next` forces SANDBOX_ERROR results;
    `gate` (an asyncio.Event) holds every run until it is set."""

    def __init__(self, fail_next: int = 0, gate: asyncio.Event | None = None):
        self.fail_next = fail_next
        self.gate = gate
        self.runs: list[tuple[str, str | None]] = []
        self.sessions_opened: list[str] = []
        self.sessions_closed: list[str] = []

    async def run(self, code, *, timeout=None, memory_mb=None, session=None):
        self.runs.append((code, session))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            return ExecResult(ExecStatus.SANDBOX_ERROR, sandbox_message="worker died")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(code, {})  # noqa: S102 - a trusted stand-in sandbox for these tests
        except Exception:  # noqa: BLE001 - any error of the code is its result
            return ExecResult(ExecStatus.ERROR, stdout=out.getvalue(), stderr=traceback.format_exc(), exit_code=1)
        return ExecResult(ExecStatus.OK, stdout=out.getvalue(), exit_code=0)

    async def open_session(self):
        self.sessions_opened.append(f"s{len(self.sessions_opened)}")
        return self.sessions_opened[-1]

    async def close_session(self, session):
        self.sessions_closed.append(session)

    async def health_check(self):
        return None

    async def aclose(self):
        return None


def stdout_formatter(result: ExecResult, max_chars: int) -> str:
    return (result.stdout or result.stderr).strip()[:max_chars]


CODE_TURNS = [
    "Let me compute.\n```python\nprint(2 + 3)\n```\n```output\nHALLUCINATED\n```\n",
    "Again.\n```python\nprint(4 * 5)\n```\n```output\n",
    "Third.\n```python\nprint(7)\n```\n```output\n",
    "So the answer is \\boxed{5}.",
]
OUTPUTS = ["5", "20", "7"]


def make(script, **config):
    tok = ToyTokenizer()
    engine = ScriptedEngine(tok, script)
    config.setdefault("observation_formatter", stdout_formatter)
    return tok, engine, RolloutConfig(**config)


def check_invariants(tok, traj: Trajectory):
    """Mask 0 exactly on the interpreter spans, logprobs aligned, text = decode(ids)."""
    n = len(traj.completion_ids)
    assert len(traj.loss_mask) == n and len(traj.logprobs) == n
    tool_positions = {i for c in traj.calls for i in range(c.token_start, c.token_end)}
    for i, (tid, m, lp) in enumerate(zip(traj.completion_ids, traj.loss_mask, traj.logprobs)):
        assert m == (0 if i in tool_positions else 1), i
        assert lp == (0.0 if m == 0 else scripted_logprob(tid))
    assert traj.text == tok.decode(traj.completion_ids, skip_special_tokens=True)
    assert traj.text == "".join(s["text"] for s in traj.segments)
    assert traj.model_tokens + traj.tool_tokens == n and traj.tool_tokens == len(tool_positions)


@pytest.mark.parametrize("c", [0, 1, 2, 3])
async def test_masks_exact_for_each_call_budget(c):
    tok, engine, config = make(CODE_TURNS, max_tool_calls=c, max_response_tokens=2000)
    sandbox = FakeSandbox()
    traj = await rollout(engine, sandbox, tok.encode("Q: 2+3?\n"), config)
    check_invariants(tok, traj)
    assert traj.num_calls == c and traj.finish_reason == "stop" and not traj.truncated
    for k, call in enumerate(traj.calls):
        assert call.result.stdout.strip() == OUTPUTS[k]
        # the model wrote "```output" (mask 1); the interpreter wrote the rest of the block (mask 0)
        assert tok.decode(traj.completion_ids[call.token_start : call.token_end]) == f"\n{OUTPUTS[k]}\n```\n"
        assert tok.decode(traj.completion_ids[call.token_start - 9 : call.token_start]) == "```output"
    kinds = [s["kind"] for s in traj.segments]
    assert kinds == ["model", "tool"] * c + ["model"]
    # after the budget the model's turn is its own text: its block is recorded as skipped, not run
    assert [s.reason for s in traj.skipped_calls] == ([] if c == 3 else ["over_budget"])
    assert len(sandbox.runs) == c
    if c == 0:
        assert "HALLUCINATED" in traj.text  # no stop string at all: plain reasoning
    else:
        assert "HALLUCINATED" not in traj.text
        assert "```output\n5\n```\nAgain." in traj.text


async def test_stop_inside_a_token_keeps_the_token_and_completes_the_block():
    turn0 = ["Go.\n", "```python\n", "print(6 * 7)\n", "```\n", "```", "output\n", "NEVER"]
    tok, engine, config = make([turn0, ["\\boxed{42}"]], max_tool_calls=1)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    check_invariants(tok, traj)
    # the sampled token "output\n" is kept whole; only "42\n```\n" is appended
    assert traj.text == "Go.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\n\\boxed{42}"
    call = traj.calls[0]
    assert tok.decode(traj.completion_ids[call.token_start : call.token_end]) == "42\n```\n"


async def test_stop_token_carrying_unrelated_text_keeps_it_and_opens_observation_on_new_line():
    turn0 = ["```python\n", "print(1)\n", "```\n", "```", "output\nfoo"]
    tok, engine, config = make([turn0, "done"], max_tool_calls=1)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    check_invariants(tok, traj)
    assert traj.text == "```python\nprint(1)\n```\n```output\nfoo\n1\n```\ndone"


async def test_incomplete_block_runs_nothing_and_generation_continues():
    turns = ["```python\nprint(1)```output", "\nthen.\n```python\nprint(3)\n```\n```output\n", "\\boxed{3}"]
    tok, engine, config = make(turns, max_tool_calls=2)
    sandbox = FakeSandbox()
    traj = await rollout(engine, sandbox, tok.encode("Q"), config)
    check_invariants(tok, traj)
    assert [code for code, _ in sandbox.runs] == ["print(3)\n"]
    assert traj.num_turns == 3 and traj.num_calls == 1
    # a generation resumed without an observation continues the same model segment
    assert [s["kind"] for s in traj.segments] == ["model", "tool", "model"]


async def test_only_the_last_block_of_a_turn_runs():
    turn = "```python\nprint(1)\n```\nand\n```python\nprint(2)\n```\n```output\n"
    tok, engine, config = make([turn, "end"], max_tool_calls=1)
    sandbox = FakeSandbox()
    traj = await rollout(engine, sandbox, tok.encode("Q"), config)
    assert [code for code, _ in sandbox.runs] == ["print(2)\n"]
    assert [(s.code, s.reason) for s in traj.skipped_calls] == [("print(1)\n", "not_last")]


async def test_block_written_without_asking_for_output_is_recorded_not_run():
    tok, engine, config = make(["```python\nprint(1)\n```\nThe answer is \\boxed{1}."], max_tool_calls=2)
    sandbox = FakeSandbox()
    traj = await rollout(engine, sandbox, tok.encode("Q"), config)
    assert sandbox.runs == [] and [s.reason for s in traj.skipped_calls] == ["not_requested"]


async def test_length_budget_counts_tool_tokens_and_cuts_the_observation():
    code_turn = "```python\nprint('x' * 50)\n```\n```output"
    prompt_budget = len(code_turn) + 20  # the 50-char observation cannot fit
    tok, engine, config = make([code_turn, "never"], max_tool_calls=1, max_response_tokens=prompt_budget)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    check_invariants(tok, traj)
    assert len(traj.completion_ids) == prompt_budget
    assert traj.truncated and traj.finish_reason == "length"
    assert traj.tool_tokens == 20 and traj.num_turns == 1


async def test_length_budget_during_generation():
    tok, engine, config = make(["a" * 100], max_tool_calls=1, max_response_tokens=30)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    assert len(traj.completion_ids) == 30 and traj.truncated and traj.finish_reason == "length"


async def test_error_output_is_fed_back_to_the_model():
    tok, engine, config = make(["```python\n1/0\n```\n```output\n", "oops"], max_tool_calls=1)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    assert traj.calls[0].result.status is ExecStatus.ERROR
    assert "ZeroDivisionError" in traj.segments[1]["text"]


@pytest.mark.parametrize("policy", ["mark", "raise"])
async def test_sandbox_error_is_never_shown_to_the_model(policy):
    tok, engine, config = make(CODE_TURNS, max_tool_calls=2, on_sandbox_error=policy, sandbox_retries=1)
    sandbox = FakeSandbox(fail_next=2)
    if policy == "raise":
        with pytest.raises(SandboxFailure, match="worker died"):
            await rollout(engine, sandbox, tok.encode("Q"), config)
        return
    traj = await rollout(engine, sandbox, tok.encode("Q"), config)
    assert traj.sandbox_error and traj.finish_reason == "sandbox_error" and traj.sandbox_errors == 2
    assert traj.tool_tokens == 0 and all(s["kind"] == "model" for s in traj.segments)
    assert [c.executed for c in traj.calls] == [False]


async def test_sandbox_error_retried_then_succeeds():
    tok, engine, config = make(CODE_TURNS, max_tool_calls=1, sandbox_retries=1)
    traj = await rollout(engine, FakeSandbox(fail_next=1), tok.encode("Q"), config)
    assert not traj.sandbox_error and traj.sandbox_errors == 1 and traj.calls[0].observation == "5"


async def test_session_mode_opens_and_closes_one_session_per_trajectory():
    tok, engine, config = make(CODE_TURNS, max_tool_calls=2, session=True)
    sandbox = FakeSandbox()
    await rollout(engine, sandbox, tok.encode("Q"), config)
    assert sandbox.sessions_opened == ["s0"] == sandbox.sessions_closed
    assert [s for _, s in sandbox.runs] == ["s0", "s0"]


async def test_trajectory_json_round_trip():
    tok, engine, config = make(CODE_TURNS, max_tool_calls=2)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config, metadata={"id": "q1"})
    data = json.loads(json.dumps(traj.to_dict()))
    assert Trajectory.from_dict(data) == traj
    assert data["calls"][0]["result"]["status"] == "ok" and data["metadata"] == {"id": "q1"}


async def test_waiting_on_the_sandbox_does_not_hold_back_other_trajectories():
    gate = asyncio.Event()
    tok = ToyTokenizer()
    prompt_a, prompt_b = tok.encode("A"), tok.encode("B")

    def script(prompt, turn):
        if prompt[: len(prompt_a)] == prompt_a:
            return CODE_TURNS[0] if turn == 0 else "A done"
        return "B done without tools"

    engine = ScriptedEngine(tok, script, step_time=0.001)
    config = RolloutConfig(max_tool_calls=1, observation_formatter=stdout_formatter)
    sandbox = FakeSandbox(gate=gate)
    task_a = asyncio.create_task(rollout(engine, sandbox, prompt_a, config))
    while not sandbox.runs:  # A is now waiting on the sandbox
        await asyncio.sleep(0.001)
    traj_b = await asyncio.wait_for(rollout(engine, sandbox, prompt_b, config), timeout=30)
    assert traj_b.text == "B done without tools" and not task_a.done() and len(sandbox.runs) == 1
    gate.set()
    traj_a = await task_a
    assert traj_a.text.endswith("```output\n5\n```\nA done")


async def test_rollout_many_keeps_prompt_order_and_per_trajectory_seeds():
    tok = ToyTokenizer()
    seen_seeds = []

    class Recording(ScriptedEngine):
        async def generate(self, prompt_ids, params):
            seen_seeds.append(params.seed)
            return await super().generate(prompt_ids, params)

    engine = Recording(tok, lambda prompt, turn: f"answer for {tok.decode(prompt)}", step_time=0.001)
    prompts = [tok.encode(f"q{i}") for i in range(5)]
    trajs = await rollout_many(engine, None, prompts, RolloutConfig(max_tool_calls=0, seed=7))
    assert [t.text for t in trajs] == [f"answer for q{i}" for i in range(5)]
    assert len(set(seen_seeds)) == 5


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_tool_calls"):
        RolloutConfig(max_tool_calls=-1)
    with pytest.raises(ValueError, match="on_sandbox_error"):
        RolloutConfig(on_sandbox_error="ignore")


async def test_default_observation_shows_the_error_and_truncates_long_output():
    turns = ["```python\nprint('a' * 5000)\n```\n```output\n", "```python\nx = 1\n1/0\n```\n```output\n", "end"]
    tok = ToyTokenizer()
    engine = ScriptedEngine(tok, turns)
    config = RolloutConfig(max_tool_calls=2, max_observation_chars=200, max_response_tokens=5000)
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    long_obs, error_obs = (c.observation for c in traj.calls)
    assert len(long_obs) <= 200 and long_obs.startswith("aaa") and long_obs.endswith("aaa") and "cut" in long_obs
    assert "division by zero" in error_obs
    assert traj.segments[3]["text"] == "\n" + error_obs + "\n```\n"


async def test_extra_stop_strings_end_the_trajectory():
    tok, engine, config = make(["\\boxed{1}\nUser: next question"], max_tool_calls=1, stop_strings=("\nUser:",))
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    assert traj.text == "\\boxed{1}\nUser:" and traj.finish_reason == "stop" and traj.num_turns == 1


# --- call_trigger="block_close": a block runs when its closing fence is written

BLOCK_TURNS = [
    "Let me compute.\n```python\nprint(2 + 3)\n```\nHALLUCINATED\n",
    "Again.\n```python\nprint(4 * 5)\n```\n",
    "Third.\n```python\nprint(7)\n```\n",
    "So the answer is \\boxed{5}.",
]


@pytest.mark.parametrize("c", [0, 1, 2, 3])
async def test_block_close_trigger_masks_exact_for_each_call_budget(c):
    tok, engine, config = make(BLOCK_TURNS, max_tool_calls=c, max_response_tokens=2000, call_trigger="block_close")
    sandbox = FakeSandbox()
    traj = await rollout(engine, sandbox, tok.encode("Q: 2+3?\n"), config)
    check_invariants(tok, traj)
    assert traj.num_calls == c and len(sandbox.runs) == c and traj.finish_reason == "stop"
    for k, call in enumerate(traj.calls):
        assert call.result.stdout.strip() == OUTPUTS[k]
        # the model wrote the closing fence (mask 1); the interpreter wrote the whole output block (mask 0)
        assert tok.decode(traj.completion_ids[call.token_start : call.token_end]) == f"```output\n{OUTPUTS[k]}\n```\n"
        assert tok.decode(traj.completion_ids[call.token_start - 5 : call.token_start]) == "\n```\n"
        assert traj.loss_mask[call.token_start - 1] == 1 and traj.loss_mask[call.token_start] == 0
    assert [s["kind"] for s in traj.segments] == ["model", "tool"] * c + ["model"]
    assert [s.reason for s in traj.skipped_calls] == ([] if c == 3 else ["over_budget"])
    assert ("HALLUCINATED" in traj.text) == (c == 0)
    if c:
        assert traj.text.startswith("Let me compute.\n```python\nprint(2 + 3)\n```\n```output\n5\n```\nAgain.")


async def test_block_close_trigger_continues_past_openers_and_other_fences():
    turns = ["Look:\n```\n", "x = 1\n```\n", "```python\nprint(9)\n```\n", "\\boxed{9}"]
    tok, engine, config = make(turns, max_tool_calls=1, call_trigger="block_close")
    sandbox = FakeSandbox()
    traj = await rollout(engine, sandbox, tok.encode("Q"), config)
    check_invariants(tok, traj)
    assert [code for code, _ in sandbox.runs] == ["print(9)\n"]
    assert traj.num_turns == 4 and [s["kind"] for s in traj.segments] == ["model", "tool", "model"]
    assert traj.text == "Look:\n```\nx = 1\n```\n```python\nprint(9)\n```\n```output\n9\n```\n\\boxed{9}"


async def test_block_close_trigger_still_honours_the_models_output_fence():
    tok, engine, config = make(["```python\nprint(1)\n```output\n", "done"], max_tool_calls=1, call_trigger="block_close")
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    check_invariants(tok, traj)
    assert traj.text == "```python\nprint(1)\n```output\n1\n```\ndone"


@pytest.mark.parametrize(("last_token", "expected_tail"), [
    ("```\n", "```\n```output\n42\n```\n"),            # the fence alone: the whole block is appended
    ("```\n```out", "```\n```output\n42\n```\n"),      # the model began the block: only the rest is appended
    ("```\nThe", "```\nThe\n```output\n42\n```\n"),    # unrelated text is kept; the block opens on a new line
])
async def test_block_close_trigger_stop_inside_a_token(last_token, expected_tail):
    turn0 = ["```python\n", "print(6 * 7)\n", last_token, "NEVER"]
    tok, engine, config = make([turn0, ["\\boxed{42}"]], max_tool_calls=1, call_trigger="block_close")
    traj = await rollout(engine, FakeSandbox(), tok.encode("Q"), config)
    check_invariants(tok, traj)
    assert traj.text == "```python\nprint(6 * 7)\n" + expected_tail + "\\boxed{42}"


def test_unknown_call_trigger_is_refused():
    with pytest.raises(ValueError, match="call_trigger"):
        RolloutConfig(call_trigger="eager")
