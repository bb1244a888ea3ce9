"""Degenerate-trajectory detectors (torl.metrics.health) and run-health alarms (torl.metrics.alarms)."""

import asyncio
import json
import math

import pytest

from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.metrics.alarms import ALARM_NAMES, Alarm, HealthConfig, HealthMonitor
from torl.metrics.health import (
    IGNORED_RERUN,
    IGNORED_VALUE,
    health_metrics,
    ignored_observations,
    is_degenerate,
    is_void_turn,
    normalize_code,
    repeated_calls,
    turns_after_observations,
    void_turns,
)
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.loop import RolloutConfig, rollout


def make_traj(*parts, truncated=False, sandbox_error=False):
    """parts: str = model text; (code, status, observation) = the model writes the block, the tool answers."""
    segments, calls = [], []

    def model(text):
        if segments and segments[-1]["kind"] == "model":  # as the loop does: one segment per turn
            segments[-1]["text"] += text
        else:
            segments.append({"kind": "model", "text": text})

    for part in parts:
        if isinstance(part, str):
            model(part)
            continue
        code, status, observation = part
        model(f"```python\n{code}\n```\n```output")
        executed = status != "sandbox_error"
        calls.append({"code": code, "observation": observation, "executed": executed,
                      "result": {"status": status, "stdout": observation if status == "ok" else "", "stderr": ""}})
        if executed:
            segments.append({"kind": "tool", "text": f"\n{observation}\n```\n"})
    return {"calls": calls, "skipped_calls": [], "segments": segments, "text": "".join(s["text"] for s in segments),
            "finish_reason": "sandbox_error" if sandbox_error else ("length" if truncated else "stop"),
            "truncated": truncated, "sandbox_error": sandbox_error}


HEALTHY = make_traj("Compute.\n", ("print(6*7)", "ok", "42"), "So the product is 42: \\boxed{42}.")
NO_CODE = make_traj("2 + 2 = 4, so \\boxed{4}.")
VOID_EOS = make_traj("Compute.\n", ("print(6*7)", "ok", "42"), "")            # read the output, said nothing
VOID_CHATTER = make_traj("Compute.\n", ("print(6*7)", "ok", "42"), "Hmm, interesting.")
TWO_CALLS = make_traj("Compute.\n", ("print(x)", "error", "NameError: name 'x' is not defined"),
                      "Fix it.\n", ("x = 3\nprint(x)", "ok", "3"), "\\boxed{3}")
RERUN = make_traj("Compute.\n", ("print(1/0)", "error", "ZeroDivisionError: division by zero"),
                  "Again.\n", ("print( 1/0 )\n\n", "error", "ZeroDivisionError: division by zero"), "\\boxed{0}")
IGNORES = make_traj("Compute.\n", ("print(482*37)", "ok", "17834"), "Therefore \\boxed{17000}.")


# --- detectors -----------------------------------------------------------------------------------

def test_turns_are_the_model_text_after_each_observation():
    assert turns_after_observations(NO_CODE) == []
    assert turns_after_observations(HEALTHY) == ["So the product is 42: \\boxed{42}."]
    assert turns_after_observations(TWO_CALLS) == ["Fix it.\n```python\nx = 3\nprint(x)\n```\n```output", "\\boxed{3}"]
    assert turns_after_observations(VOID_EOS) == [""]


def test_void_turn_is_neither_code_nor_boxed_answer():
    assert not is_void_turn("So \\boxed{42}.")
    assert not is_void_turn("Let me check.\n```python\nprint(1)\n```\n```output")
    assert is_void_turn("")
    assert is_void_turn("The answer is 42.")  # a phrase is not an answer the reward grades
    assert is_void_turn("```python\nprint('unfinished'")  # an unclosed block runs nothing
    assert is_void_turn("```python\nprint('\\\\boxed{1}')\n")  # a box inside code is not the model's answer
    assert is_void_turn("So \\boxed{42")  # never closed


def test_void_turns_count_per_trajectory_and_flag_degenerate():
    assert [void_turns(t) for t in (HEALTHY, NO_CODE, TWO_CALLS, VOID_EOS, VOID_CHATTER)] == [0, 0, 0, 1, 1]
    assert not is_degenerate(HEALTHY) and not is_degenerate(NO_CODE) and not is_degenerate(TWO_CALLS)
    assert is_degenerate(VOID_EOS) and is_degenerate(VOID_CHATTER)
    two_void = make_traj("a\n", ("print(1)", "ok", "1"), "hmm\n", ("print(2)", "ok", "2"), "ok then")
    # the middle turn wrote code, so only the last one is void
    assert void_turns(two_void) == 1


def test_the_turn_the_length_budget_cut_is_not_judged():
    cut = make_traj("Compute.\n", ("print(6*7)", "ok", "42"), "So the answer would be", truncated=True)
    assert void_turns(cut) == 0 and not is_degenerate(cut)
    assert void_turns(make_traj("Compute.\n", ("print(6*7)", "ok", "42"), "So the answer would be")) == 1  # the model stopped
    # earlier turns of a cut response are still judged (they ended in a tool call: code, not void)
    two = make_traj("a\n", ("print(1)", "ok", "1"), "b\n", ("print(2)", "ok", "2"), "So", truncated=True)
    assert void_turns(two) == 0 and len(turns_after_observations(two)) == 2
    assert health_metrics([two])["health/void_turn_ratio"] == 0.0  # one judged turn, not void


def test_sandbox_failure_is_never_degenerate():
    failed = make_traj("Run.\n", ("print(1)", "ok", "1"), "", ("print(2)", "sandbox_error", ""), sandbox_error=True)
    assert not is_degenerate(failed)


def test_normalize_code_ignores_spacing_and_comments_but_keeps_structure():
    assert normalize_code("x  =  1\n\n\nprint(x)   \n") == normalize_code("x = 1\nprint(x)")
    assert normalize_code("if x:\n    a()\nb()") != normalize_code("if x:\n    a()\n    b()")
    assert normalize_code("x=1  # set x\nprint( x )") == normalize_code("x = 1\nprint(x)")
    assert normalize_code("if x:\n  a()") == normalize_code("if x:\n    a()")
    assert normalize_code("print('a  b')") != normalize_code("print('a b')")  # inside a string spacing is data
    # code that does not tokenize is compared line by line
    assert normalize_code("print('oops)\n\n") == normalize_code("print('oops)") != normalize_code("print('oops )")


def test_repeated_code_counts_repeats_not_first_runs():
    assert repeated_calls(HEALTHY) == 0 and repeated_calls(TWO_CALLS) == 0 and repeated_calls(NO_CODE) == 0
    assert repeated_calls(RERUN) == 1
    thrice = make_traj("a\n", ("print(1)", "ok", "1"), "b\n", ("print(1)", "ok", "1"), "c\n",
                       ("print(1)\n", "ok", "1"), "\\boxed{1}")
    assert repeated_calls(thrice) == 2


def test_rerunning_the_failed_code_ignores_the_error():
    assert ignored_observations(RERUN) == [(0, IGNORED_RERUN)]
    assert ignored_observations(TWO_CALLS) == []  # fixed the code after the error
    same_after_success = make_traj("a\n", ("print(1)", "ok", "1"), "b\n", ("print(1)", "ok", "1"), "\\boxed{1}")
    assert ignored_observations(same_after_success) == []  # a repeat, but no error was ignored


def test_boxing_another_number_than_printed_ignores_the_value():
    assert ignored_observations(IGNORES) == [(0, IGNORED_VALUE)]
    assert ignored_observations(HEALTHY) == []
    keep = [
        make_traj("a\n", ("print(12)", "ok", "12"), "12 ways of 36, so 12/36 = \\boxed{\\frac{1}{3}}."),  # derived, mentions it
        make_traj("a\n", ("print(round(1/3, 3))", "ok", "0.333"), "\\boxed{\\frac{1}{3}}"),  # same up to rounding
        make_traj("a\n", ("print(3/4)", "ok", "0.75"), "\\boxed{\\frac{3}{4}}"),
        make_traj("a\n", ("print(x)", "ok", "1.4142135"), "\\boxed{\\sqrt{2}}"),  # not a plain number: not judged
        make_traj("a\n", ("print(a, b)", "ok", "3 4"), "\\boxed{7}"),  # not one number
        make_traj("a\n", ("print(a)\nprint(b)", "ok", "3\n4"), "\\boxed{7}"),  # two lines
        make_traj("a\n", ("print(8)", "ok", "8"), "Check:\n```python\nprint(7)\n```\n\\boxed{7}"),  # wrote more code
        make_traj("a\n", ("print(8)", "ok", "8"), "I am not sure."),  # no answer at all
        make_traj("a\n", ("print(20-12)", "ok", "8"), "Since 20-8, \\boxed{12}"),  # mentions 8
    ]
    assert [ignored_observations(t) for t in keep] == [[] for _ in keep]
    # only the last call's value is judged: an earlier intermediate value may legitimately differ
    earlier = make_traj("a\n", ("print(5)", "ok", "5"), "b\n", ("print(9)", "ok", "9"), "\\boxed{9}")
    assert ignored_observations(earlier) == []
    negative = make_traj("a\n", ("print(-12)", "ok", "-12"), "\\boxed{12}")
    assert ignored_observations(negative) == [(0, IGNORED_VALUE)]


def test_health_metrics_over_a_batch():
    batch = [HEALTHY, NO_CODE, VOID_EOS, RERUN, IGNORES,
             make_traj("I give up."),
             make_traj("Run.\n", ("print(1)", "sandbox_error", ""), sandbox_error=True)]  # ours: left out
    m = health_metrics(batch)
    # judged turns: HEALTHY 1, VOID_EOS 1, RERUN 2, IGNORES 1 -> 5, one void
    assert m["health/void_turn_ratio"] == pytest.approx(1 / 5)
    assert m["health/degenerate_ratio"] == pytest.approx(1 / 6)
    # executed calls: 1 + 1 + 2 + 1 = 5; one repeat (RERUN); ignored: RERUN's first, IGNORES'
    assert m["health/repeated_code_ratio"] == pytest.approx(1 / 5)
    assert m["health/ignored_observation_ratio"] == pytest.approx(2 / 5)
    # without a box: VOID_EOS and "I give up."
    assert m["health/no_boxed_ratio"] == pytest.approx(2 / 6)


def test_health_metrics_empty_denominators_are_none():
    assert health_metrics([NO_CODE]) == {
        "health/void_turn_ratio": None, "health/degenerate_ratio": 0.0, "health/repeated_code_ratio": None,
        "health/ignored_observation_ratio": None, "health/no_boxed_ratio": 0.0}
    assert set(health_metrics([]).values()) == {None}
    healthy = health_metrics([HEALTHY, TWO_CALLS])
    assert all(v == 0.0 for v in healthy.values())


class PrintSandbox(Sandbox):
    """Evaluates `print(<expr>)` snippets in-process (trusted test code only)."""

    async def run(self, code, *, timeout=None, memory_mb=None, session=None):
        expr = code.strip().removeprefix("print(").removesuffix(")")
        return ExecResult(ExecStatus.OK, stdout=f"{eval(expr)}\n", exit_code=0)  # trusted test snippets only

    async def open_session(self):
        return "s"

    async def close_session(self, session):
        pass

    async def health_check(self):
        pass

    async def aclose(self):
        pass


def test_detectors_read_real_loop_trajectories():
    """The loop's own segments: a void turn (EOS right after the observation) and a healthy one."""
    turns = {"void": ["Compute.\n```python\nprint(6*7)\n```\n```output", ""],
             "ok": ["Compute.\n```python\nprint(6*7)\n```\n```output", "So \\boxed{42}."]}

    async def run(name):
        tok = ToyTokenizer()
        engine = ScriptedEngine(tok, lambda prompt, turn: turns[name][turn])
        traj = await rollout(engine, PrintSandbox(), tok.encode(f"Q {name}:"), RolloutConfig(max_tool_calls=1))
        return traj.to_dict()

    void, ok = asyncio.run(run("void")), asyncio.run(run("ok"))
    assert void["calls"][0]["observation"] == "42" and void["finish_reason"] == "stop"
    assert is_degenerate(void) and not is_degenerate(ok)
    assert health_metrics([void, ok])["health/void_turn_ratio"] == 0.5
    assert health_metrics([void, ok])["health/no_boxed_ratio"] == 0.5


# --- alarms --------------------------------------------------------------------------------------

def feed(monitor, rows, start=1):
    return [monitor.update(step, row) for step, row in enumerate(rows, start)]


def names(alarms):
    return [a.name for a in alarms]


def healthy_rows(n):
    return [{"tools/code_ratio": 0.8 + 0.02 * (i % 3), "tools/calls_per_response": 0.9, "grad_norm": 1.0 + 0.1 * (i % 4),
             "entropy": 0.6 - 0.002 * i, "health/no_boxed_ratio": 0.1} for i in range(n)]


def test_a_healthy_run_raises_nothing():
    monitor = HealthMonitor()
    assert all(alarms == [] for alarms in feed(monitor, healthy_rows(60)))
    assert monitor.alarm_metrics() == {f"health/alarm_{n}": 0 for n in ALARM_NAMES}
    assert monitor.summary_lines() == ["health: no alarms in 60 step(s) (definitions: torl/metrics/METRICS.md, Health metrics)"]


def test_tool_collapse_fires_on_a_fall_from_the_peak():
    monitor = HealthMonitor(HealthConfig(tool_window=2, tool_drop=0.5))
    rows = [{"tools/code_ratio": v} for v in (0.6, 0.8, 0.8, 0.5, 0.3, 0.2, 0.1)]
    result = feed(monitor, rows)
    # windowed means: -, .7, .8, .65, .4 (= .5 x .8: fires), .25, .15
    assert [names(a) for a in result] == [[], [], [], [], ["tool_collapse"], ["tool_collapse"], ["tool_collapse"]]
    first, later = result[4][0], result[5][0]
    assert first.new and not later.new and first.step == 5
    assert first.value == pytest.approx(0.4) and first.reference == pytest.approx(0.8)
    assert "tools/code_ratio" in first.message and "peak" in first.message
    assert monitor.alarm_metrics()["health/alarm_tool_collapse"] == 1


def test_tool_collapse_watches_calls_per_response_too():
    monitor = HealthMonitor(HealthConfig(tool_window=1))
    result = feed(monitor, [{"tools/code_ratio": 0.9, "tools/calls_per_response": c} for c in (2.0, 1.8, 0.5)])
    assert names(result[2]) == ["tool_collapse"] and "calls_per_response" in result[2][0].message


def test_tool_collapse_ignores_noise_near_zero_and_a_single_early_step():
    monitor = HealthMonitor(HealthConfig(tool_window=1, tool_min_peak=0.2))
    assert all(a == [] for a in feed(monitor, [{"tools/code_ratio": v} for v in (0.03, 0.15, 0.0, 0.1, 0.0)]))
    windowed = HealthMonitor(HealthConfig(tool_window=3))
    # one lucky first step (1.0) does not set the peak: the window is not full yet
    assert all(a == [] for a in feed(windowed, [{"tools/code_ratio": v} for v in (1.0, 0.3, 0.3, 0.3, 0.3)]))


def test_grad_norm_spike_after_warmup():
    monitor = HealthMonitor(HealthConfig(grad_warmup=5, grad_window=10, grad_spike_factor=10))
    # a huge first norm is not judged: no warm-up yet
    result = feed(monitor, [{"grad_norm": v} for v in (50.0, 1.0, 1.2, 0.9, 1.1, 1.0, 30.0, 1.0)])
    assert [names(a) for a in result] == [[], [], [], [], [], [], ["grad_norm_spike"], []]
    spike = result[6][0]
    assert spike.value == 30.0 and spike.reference == pytest.approx(1.05)
    nan = monitor.update(9, {"grad_norm": float("nan")})
    assert names(nan) == ["grad_norm_spike"] and nan[0].value is None
    assert 50.0 in monitor.grad_norms and all(math.isfinite(g) for g in monitor.grad_norms)


def test_entropy_collapse_below_fraction_of_early_reference():
    monitor = HealthMonitor(HealthConfig(entropy_reference_steps=3, entropy_fraction=0.2))
    result = feed(monitor, [{"entropy": v} for v in (0.01, 0.02, 0.03, 0.01, 0.5)])  # low early: the reference is low too
    assert all(a == [] for a in result)
    monitor = HealthMonitor(HealthConfig(entropy_reference_steps=3, entropy_fraction=0.2))
    result = feed(monitor, [{"entropy": v} for v in (0.5, 0.7, 0.6, 0.3, 0.13, 0.11)])
    assert [names(a) for a in result] == [[], [], [], [], [], ["entropy_collapse"]]
    assert result[5][0].reference == pytest.approx(0.6)


def test_format_collapse_above_threshold():
    monitor = HealthMonitor(HealthConfig(no_boxed_max=0.5))
    result = feed(monitor, [{"health/no_boxed_ratio": v} for v in (0.2, 0.5, 0.75, None)])
    assert [names(a) for a in result] == [[], [], ["format_collapse"], []]  # null: nothing to judge


def test_missing_or_null_metrics_are_skipped():
    monitor = HealthMonitor()
    assert feed(monitor, [{}, {"grad_norm": None, "entropy": None, "tools/code_ratio": None}, {"grad_norm": "x"}]) == [[], [], []]
    assert monitor.steps == 3 and monitor.grad_norms_seen == 0


def test_config_validation_names_the_setting():
    for bad, match in [({"tool_drop": 1.5}, "tool_drop"), ({"tool_min_peak": 0}, "tool_min_peak"),
                       ({"grad_spike_factor": 1.0}, "grad_spike_factor"), ({"entropy_fraction": 0}, "entropy_fraction"),
                       ({"no_boxed_max": 1.0}, "no_boxed_max"), ({"tool_window": 0}, "tool_window"),
                       ({"grad_warmup": 60, "grad_window": 50}, "grad_warmup")]:
        with pytest.raises(ValueError, match=match):
            HealthConfig(**bad)
    with pytest.raises(dataclasses_frozen_error()):
        HealthConfig().tool_drop = 0.1  # type: ignore[misc]


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_state_round_trips_through_json_and_resumes_identically():
    config = HealthConfig(tool_window=2, grad_warmup=3, grad_window=5, entropy_reference_steps=2)
    rows = healthy_rows(8) + [{"tools/code_ratio": 0.1, "grad_norm": 40.0, "entropy": 0.01, "health/no_boxed_ratio": 0.9}] * 3
    straight = HealthMonitor(config)
    expected = feed(straight, rows)
    resumed = HealthMonitor(config)
    feed(resumed, rows[:9])
    restored = HealthMonitor(config)
    restored.load_state_dict(json.loads(json.dumps(resumed.state_dict())))
    assert restored.state_dict() == resumed.state_dict()
    assert feed(restored, rows[9:], start=10) == expected[9:]
    assert restored.summary_lines() == straight.summary_lines()
    assert restored.alarm_metrics() == straight.alarm_metrics() == {f"health/alarm_{n}": 1 for n in ALARM_NAMES}
    with pytest.raises(ValueError, match="version"):
        HealthMonitor().load_state_dict({"version": 99})


def test_summary_lines_say_what_fired_and_when():
    monitor = HealthMonitor(HealthConfig(no_boxed_max=0.5))
    feed(monitor, [{"health/no_boxed_ratio": v} for v in (0.1, 0.9, 0.8, 0.2)])
    lines = monitor.summary_lines()
    assert lines[0].startswith("health: 1 alarm(s) in 4 step(s)")
    assert lines[1].startswith("- format_collapse: held at 2 step(s), first at step 2 (last 3)")
    assert "still active" not in lines[1] and "90%" in lines[1]
    assert isinstance(monitor.update(5, {"health/no_boxed_ratio": 1.0})[0], Alarm)
    assert "still active" in monitor.summary_lines()[1]
