"""Behaviour metrics on hand-written trajectories (the dict schema of Trajectory.to_dict())."""

import pytest

from torl.metrics.behaviour import (
    behaviour_metrics,
    call_offsets,
    calls_around_answer,
    cross_check,
    metrics_by,
    recovery,
    uses_code,
)
from torl.metrics.values import (
    as_number,
    final_boxed,
    last_value,
    same_value,
    stated_values,
)


def make_traj(*parts, skipped=(), sandbox_error=False, truncated=False):
    """parts: str = model text; (code, status, stdout) = a call: the model writes the block, the tool answers."""
    segments, calls = [], []
    for part in parts:
        if isinstance(part, str):
            segments.append({"kind": "model", "text": part})
            continue
        code, status, stdout = part
        segments.append({"kind": "model", "text": f"```python\n{code}\n```\n```output"})
        executed = status != "sandbox_error"
        calls.append({"code": code, "observation": stdout, "executed": executed,
                      "result": {"status": status, "stdout": stdout, "stderr": ""}})
        if executed:
            segments.append({"kind": "tool", "text": f"\n{stdout}\n```\n"})
    text = "".join(s["text"] for s in segments)
    model_tokens = sum(len(s["text"]) for s in segments if s["kind"] == "model")
    return {
        "calls": calls, "skipped_calls": [{"code": c, "reason": r} for c, r in skipped], "segments": segments,
        "text": text, "finish_reason": "sandbox_error" if sandbox_error else "stop", "truncated": truncated,
        "sandbox_error": sandbox_error, "sandbox_errors": int(sandbox_error), "model_tokens": model_tokens,
        "tool_tokens": len(text) - model_tokens, "num_turns": len(calls) + 1, "metadata": {},
    }


PLAIN = make_traj("2 + 2 = 4, so \\boxed{4}.")
CONFIRMED = make_traj("I think the answer is 17834. Let me verify.\n", ("print(482*37)", "ok", "17834"), "Confirmed: \\boxed{17834}")
CONTRADICTED = make_traj("So \\boxed{100}. Check:\n", ("print(9*12)", "ok", "108"), "I was wrong, \\boxed{108}")
KEPT_WRONG = make_traj("The answer is 7.\n", ("print(2*4)", "ok", "8"), "Still \\boxed{7}")
RECOVERED = make_traj("Compute.\n", ("print(x)", "error", "NameError: name 'x' is not defined"),
                      ("x=3\nprint(x)", "ok", "3"), "So \\boxed{3}")
NOT_RECOVERED = make_traj("Compute.\n", ("1/0", "error", "ZeroDivisionError"), ("1/0", "timeout", "Timed out"), "\\boxed{0}")
ERROR_LAST = make_traj("Try.\n", ("import nothing", "error", "ModuleNotFoundError"), "Give up: \\boxed{5}")
SKIPPED = make_traj("First ", ("print(1)", "ok", "1"), "then more code ```python\nprint(2)\n``` \\boxed{1}",
                    skipped=[("print(2)", "over_budget"), ("print(0)", "not_last")])
SANDBOX_FAIL = make_traj("Run it.\n", ("print(1)", "sandbox_error", ""), sandbox_error=True)


def test_uses_code_counts_skipped_blocks_too():
    assert not uses_code(PLAIN)
    assert uses_code(CONFIRMED)
    only_skipped = make_traj("text \\boxed{1}", skipped=[("print(1)", "over_budget")])
    assert uses_code(only_skipped)


def test_call_offsets_point_at_the_tool_output():
    (offset,) = call_offsets(CONFIRMED)
    assert CONFIRMED["text"][offset:].startswith("\n17834\n```")
    # without segments the code is searched in the text instead
    no_segments = {**CONFIRMED, "segments": []}
    (fallback,) = call_offsets(no_segments)
    assert fallback <= offset and CONFIRMED["text"][:fallback].endswith("print(482*37)")


def test_calls_around_first_answer():
    assert calls_around_answer(CONFIRMED) == (1, 0)      # "answer is" is not a box; box comes after
    assert calls_around_answer(CONTRADICTED) == (0, 1)   # boxed 100 first, then checked
    assert calls_around_answer(PLAIN) == (0, 0)
    no_box = make_traj("hmm ", ("print(1)", "ok", "1"), "no answer")
    assert calls_around_answer(no_box) == (1, 0)


def test_recovery_follows_the_first_failure_only():
    assert recovery(PLAIN) is None
    assert recovery(CONFIRMED) is None
    assert recovery(RECOVERED) == (True, True)
    assert recovery(NOT_RECOVERED) == (True, False)
    assert recovery(ERROR_LAST) == (False, False)
    assert recovery(SANDBOX_FAIL) is None  # our failure, not the model's


def test_cross_check_confirm_contradict_and_change():
    confirmed = cross_check(CONFIRMED)
    assert confirmed["stated"] == "17834" and confirmed["confirmed"] and not confirmed["changed"]
    contradicted = cross_check(CONTRADICTED)
    assert contradicted["stated"] == "100" and not contradicted["confirmed"]
    assert contradicted["changed"] and contradicted["final"] == "108"
    kept = cross_check(KEPT_WRONG)
    assert not kept["confirmed"] and not kept["changed"]
    assert cross_check(PLAIN) is None
    assert cross_check(RECOVERED) is None  # nothing was stated before the calls
    # a failed call is not a check; the next successful one is
    failed_then_ok = make_traj("answer: 6\n", ("boom", "error", "Err"), ("print(6)", "ok", "6"), "\\boxed{6}")
    assert cross_check(failed_then_ok)["confirmed"]


def test_behaviour_metrics_hand_computed():
    trajs = [PLAIN, CONFIRMED, CONTRADICTED, KEPT_WRONG, RECOVERED, NOT_RECOVERED, ERROR_LAST, SKIPPED, SANDBOX_FAIL]
    correct = [True, True, True, False, True, False, False, True, None]
    m = behaviour_metrics(trajs, correct)
    assert m["responses"] == 9 and m["scored"] == 8
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["code_ratio"] == pytest.approx(8 / 9)
    # executed calls: 1+1+1+2+2+1+1 = 9 (the sandbox-failed call is not executed); ok: 1+1+1+1+0+0+1 = 5
    assert m["executed_calls"] == 9
    assert m["calls_per_response"] == pytest.approx(9 / 9)
    assert m["pass_ratio"] == pytest.approx(5 / 9)
    assert m["skipped_calls"] == 2 and m["skipped_over_budget"] == 1 and m["skipped_not_last"] == 1
    assert m["skipped_ratio"] == pytest.approx(2 / 11)
    assert m["over_budget_ratio"] == pytest.approx(1 / 10)  # 1 over-budget block vs 9 executed calls
    assert m["timeout_ratio"] == pytest.approx(1 / 9)
    # only CONTRADICTED boxes before its call
    assert m["calls_after_answer"] == pytest.approx(1 / 9)
    assert m["calls_before_answer"] == pytest.approx(8 / 9)
    assert m["code_after_answer_ratio"] == pytest.approx(1 / 9)
    # failures: RECOVERED (retry ok, correct), NOT_RECOVERED (retry fails, wrong), ERROR_LAST (no retry, wrong)
    assert m["error_responses"] == 3
    assert m["error_retry_ratio"] == pytest.approx(2 / 3)
    assert m["error_recovery_ratio"] == pytest.approx(1 / 3)
    assert m["error_correct_ratio"] == pytest.approx(1 / 3)
    # checks: CONFIRMED (confirm), CONTRADICTED (contradict, changed, correct), KEPT_WRONG (contradict, kept, wrong)
    assert m["cross_check_ratio"] == pytest.approx(3 / 9)
    assert m["cross_check_confirm_ratio"] == pytest.approx(1 / 3)
    assert m["cross_check_contradict_ratio"] == pytest.approx(2 / 3)
    assert m["contradiction_changed_ratio"] == pytest.approx(1 / 2)
    assert m["contradiction_correct_ratio"] == pytest.approx(1 / 2)
    # with code (scored): CONFIRMED T, CONTRADICTED T, KEPT F, RECOVERED T, NOT_REC F, ERROR_LAST F, SKIPPED T
    assert m["accuracy_with_code"] == pytest.approx(4 / 7)
    assert m["accuracy_without_code"] == pytest.approx(1.0)
    assert m["sandbox_errors"] == 1 and m["sandbox_error_responses"] == 1


def test_empty_denominators_are_none_not_zero():
    m = behaviour_metrics([PLAIN], [True])
    assert m["pass_ratio"] is None and m["error_recovery_ratio"] is None
    assert m["cross_check_confirm_ratio"] is None and m["accuracy_with_code"] is None
    assert m["code_ratio"] == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 trajectories but 1"):
        behaviour_metrics([PLAIN, PLAIN], [True])


def test_metrics_by_groups_and_sorts_numerically():
    rows = [{"step": s, "trajectory": t, "correct": c}
            for s, t, c in [(10, PLAIN, True), (2, CONFIRMED, False), (10, RECOVERED, False)]]
    grouped = metrics_by(rows, key=lambda r: r["step"])
    assert list(grouped) == [2, 10]
    assert grouped[10]["responses"] == 2 and grouped[10]["accuracy"] == 0.5
    assert grouped[2]["code_ratio"] == 1.0


def test_value_helpers():
    assert final_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert final_boxed("no box") is None
    assert stated_values("So the answer is $42$. Later \\boxed{x+1}") == ["42", "x+1"]
    assert last_value("a\nvalue = 2.5 or 3/4\n\n") == ["value = 2.5 or 3/4", "2.5", "3/4"]
    assert last_value("  \n") == []
    assert as_number("\\frac{3}{4}") == 0.75 and as_number("1,000") == 1000 and as_number("x") is None
    assert as_number("45^\\circ") == 45 and as_number("1/0") is None
    assert same_value("0.5", "\\dfrac{1}{2}") and same_value("x + 1", "x+1") and not same_value("2", "3")


def test_training_metrics_are_the_behaviour_metrics():
    """`tools/*` in metrics.jsonl and the report's analytics are one computation, so they cannot disagree."""
    from torl.metrics.behaviour import TRAINING_METRICS
    from torl.train.step_record import trajectory_metrics

    trajs = [PLAIN, CONFIRMED, NOT_RECOVERED, SKIPPED, SANDBOX_FAIL]
    correct = [True, True, False, True, None]
    logged, analysed = trajectory_metrics(trajs, correct), behaviour_metrics(trajs, correct)
    assert set(logged) == set(TRAINING_METRICS)
    for name, key in TRAINING_METRICS.items():
        assert logged[name] == pytest.approx(analysed[key]), name
    assert logged["rewards/accuracy"] == pytest.approx(3 / 4)  # the sandbox-failed response is not scored
    assert logged["tools/skipped_ratio"] == pytest.approx(2 / 6)  # every skipped block, as in the report
    assert logged["tools/over_budget_ratio"] == pytest.approx(1 / 5)


def test_empty_training_ratio_is_nan_for_trl():
    import math

    from torl.train.step_record import trajectory_metrics

    logged = trajectory_metrics([PLAIN], [True])
    assert behaviour_metrics([PLAIN], [True])["pass_ratio"] is None
    assert math.isnan(logged["tools/pass_ratio"]) and logged["tools/code_ratio"] == 0.0
    assert all(isinstance(v, float) for v in logged.values())  # TRL's buffers and torch.nanmean take floats
