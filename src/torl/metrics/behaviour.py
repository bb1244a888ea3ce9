"""Behaviour metrics over tool-integrated responses, shared by `torl eval` and training dumps.

Input: trajectory dicts (``Trajectory.to_dict()``, or the compact form in sample dumps) and, per
response, ``correct`` (True / False / None = not scored, e.g. our sandbox failed). Every metric is
defined by ONE function below and documented in METRICS.md (same folder); keep the two in sync.
Ratios whose denominator is empty are ``None`` ("nothing to measure"), never 0; training turns
None into NaN only for TRL's float metric buffers (`torl.train.step_record.trajectory_metrics`), and
metrics.jsonl writes it back as ``null``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torl.metrics.values import final_boxed, last_value, same_value, stated_values
from torl.sandbox.result import FAILED_STATUSES

# --- per-response facts ---------------------------------------------------------------------------

def executed_calls(traj: dict) -> list[dict]:
    """Calls whose result was fed back to the model (a call hit by our sandbox failure was not)."""
    return [c for c in traj.get("calls", []) if c.get("executed", True)]


def uses_code(traj: dict) -> bool:
    """The response wrote at least one complete ```python block (run or not)."""
    return bool(traj.get("calls") or traj.get("skipped_calls"))


def call_failed(call: dict) -> bool:
    """An executed call whose code failed (error, timeout, memory, output limit)."""
    return call["result"]["status"] in FAILED_STATUSES


def call_offsets(traj: dict) -> list[int]:
    """Character offset in ``text`` where each executed call's output block begins.

    Tool segments and executed calls correspond one to one, in order; the model's text before the
    offset is everything it wrote before seeing that call's output.
    """
    offsets, position = [], 0
    for segment in traj.get("segments", []):
        if segment["kind"] == "tool":
            offsets.append(position)
        position += len(segment["text"])
    calls = executed_calls(traj)
    if len(offsets) < len(calls):  # segments missing (hand-made or old dumps): find the code instead
        offsets, start = [], 0
        for call in calls:
            found = traj.get("text", "").find(call["code"], start)
            start = len(traj.get("text", "")) if found < 0 else found + len(call["code"])
            offsets.append(start)
    return offsets[: len(calls)]


def model_text_before(traj: dict, offset: int) -> str:
    """The model's own text before `offset` (tool output blocks left out)."""
    out, position = [], 0
    for segment in traj.get("segments", []) or [{"kind": "model", "text": traj.get("text", "")}]:
        if position >= offset:
            break
        if segment["kind"] == "model":
            out.append(segment["text"][: offset - position])
        position += len(segment["text"])
    return "".join(out)


def first_answer_offset(traj: dict) -> int | None:
    """Offset of the first ``\\boxed`` in the model's own text (None: it never boxed an answer)."""
    position = 0
    for segment in traj.get("segments", []) or [{"kind": "model", "text": traj.get("text", "")}]:
        if segment["kind"] == "model" and (found := segment["text"].find("\\boxed")) >= 0:
            return position + found
        position += len(segment["text"])
    return None


def calls_around_answer(traj: dict) -> tuple[int, int]:
    """(executed calls before the first boxed answer, executed calls after it)."""
    answer_at = first_answer_offset(traj)
    offsets = call_offsets(traj)
    if answer_at is None:
        return len(offsets), 0
    after = sum(1 for o in offsets if o > answer_at)
    return len(offsets) - after, after


def recovery(traj: dict) -> tuple[bool, bool] | None:
    """For a response with a failed call: (its next call exists, that next call succeeded).

    None when no executed call failed. Only the FIRST failure is followed: did the model fix it?
    """
    calls = executed_calls(traj)
    for i, call in enumerate(calls):
        if call_failed(call):
            if i + 1 == len(calls):
                return False, False
            return True, calls[i + 1]["result"]["status"] == "ok"
    return None


def cross_check(traj: dict) -> dict | None:
    """The first time code output checks a value the model had already stated (see METRICS.md).

    A *stated value* is a ``\\boxed{...}`` content or the value after "answer is" / "answer:" in
    the model's own text before a call's output. A *check* is the first successful call (status
    ok, a value on its last output line) after a stated value; it *confirms* when the latest
    stated value equals some value on that last line, otherwise it *contradicts*. The answer
    *changed* when the response's final boxed answer differs from the checked stated value.
    Returns None when no call checks a stated value; else a dict with ``stated``, ``output``,
    ``confirmed``, ``final`` and ``changed``.
    """
    calls = executed_calls(traj)
    for call, offset in zip(calls, call_offsets(traj)):
        if call["result"]["status"] != "ok":
            continue
        stated = stated_values(model_text_before(traj, offset))
        output_values = last_value(call["result"].get("stdout", ""))
        if not stated or not output_values:
            continue
        claim = stated[-1]
        confirmed = any(same_value(claim, v) for v in output_values)
        final = final_boxed(traj.get("text", ""))
        changed = final is not None and not same_value(final, claim)
        return {"stated": claim, "output": output_values, "confirmed": confirmed, "final": final, "changed": changed}
    return None


# --- aggregates ----------------------------------------------------------------------------------

def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def behaviour_metrics(trajectories: Sequence[dict], correct: Sequence[bool | None]) -> dict[str, float | None]:
    """All behaviour metrics of one group of responses (one benchmark, or one training step)."""
    if len(trajectories) != len(correct):
        raise ValueError(f"{len(trajectories)} trajectories but {len(correct)} correct flags")
    n = len(trajectories)
    pairs = list(zip(trajectories, correct))
    calls = [c for t in trajectories for c in executed_calls(t)]
    skipped = [s for t in trajectories for s in t.get("skipped_calls", [])]
    over_budget = sum(s["reason"] == "over_budget" for s in skipped)
    around = [calls_around_answer(t) for t in trajectories]
    recoveries = [(r, ok) for t, ok in pairs if (r := recovery(t)) is not None]
    checks = [(x, ok) for t, ok in pairs if (x := cross_check(t)) is not None]
    contradicted = [(x, ok) for x, ok in checks if not x["confirmed"]]
    scored = [(t, ok) for t, ok in pairs if ok is not None]
    with_code = [ok for t, ok in scored if uses_code(t)]
    without_code = [ok for t, ok in scored if not uses_code(t)]
    return {
        "responses": n,
        "scored": len(scored),
        "accuracy": _ratio(sum(ok for _, ok in scored), len(scored)),
        "code_ratio": _ratio(sum(uses_code(t) for t in trajectories), n),
        "pass_ratio": _ratio(sum(c["result"]["status"] == "ok" for c in calls), len(calls)),
        "timeout_ratio": _ratio(sum(c["result"]["status"] == "timeout" for c in calls), len(calls)),
        "calls_per_response": _ratio(len(calls), n),
        "executed_calls": len(calls),
        "skipped_calls": len(skipped),
        "skipped_over_budget": over_budget,
        "skipped_not_last": sum(s["reason"] == "not_last" for s in skipped),
        "skipped_ratio": _ratio(len(skipped), len(calls) + len(skipped)),
        "over_budget_ratio": _ratio(over_budget, len(calls) + over_budget),
        "calls_before_answer": _ratio(sum(b for b, _ in around), n),
        "calls_after_answer": _ratio(sum(a for _, a in around), n),
        "code_after_answer_ratio": _ratio(sum(a > 0 for _, a in around), n),
        "response_tokens": _mean([t.get("model_tokens", 0) + t.get("tool_tokens", 0) for t in trajectories]),
        "model_tokens": _mean([t.get("model_tokens", 0) for t in trajectories]),
        "tool_tokens": _mean([t.get("tool_tokens", 0) for t in trajectories]),
        "response_chars": _mean([len(t.get("text", "")) for t in trajectories]),
        "truncated_ratio": _ratio(sum(bool(t.get("truncated")) for t in trajectories), n),
        "error_responses": len(recoveries),
        "error_retry_ratio": _ratio(sum(r[0] for r, _ in recoveries), len(recoveries)),
        "error_recovery_ratio": _ratio(sum(r[1] for r, _ in recoveries), len(recoveries)),
        "error_correct_ratio": _ratio(sum(ok is True for _, ok in recoveries), sum(ok is not None for _, ok in recoveries)),
        "cross_check_ratio": _ratio(len(checks), n),
        "cross_check_confirm_ratio": _ratio(sum(x["confirmed"] for x, _ in checks), len(checks)),
        "cross_check_contradict_ratio": _ratio(len(contradicted), len(checks)),
        "contradiction_changed_ratio": _ratio(sum(x["changed"] for x, _ in contradicted), len(contradicted)),
        "contradiction_correct_ratio": _ratio(sum(ok is True for _, ok in contradicted), sum(ok is not None for _, ok in contradicted)),
        "accuracy_with_code": _ratio(sum(with_code), len(with_code)),
        "accuracy_without_code": _ratio(sum(without_code), len(without_code)),
        "responses_with_code": sum(uses_code(t) for t in trajectories),
        "sandbox_errors": sum(int(t.get("sandbox_errors", 0)) for t in trajectories),
        "sandbox_error_responses": sum(bool(t.get("sandbox_error")) for t in trajectories),
    }


# Training name -> the metric above it logs every step (`torl.train.step_record`): one definition for
# train, eval and reports. A new metric training should log gets its name here.
TRAINING_METRICS = {
    "rewards/accuracy": "accuracy",
    "tools/code_ratio": "code_ratio",
    "tools/calls_per_response": "calls_per_response",
    "tools/pass_ratio": "pass_ratio",
    "tools/timeout_ratio": "timeout_ratio",
    "tools/skipped_ratio": "skipped_ratio",
    "tools/over_budget_ratio": "over_budget_ratio",
    "tools/sandbox_errors": "sandbox_errors",
    "lengths/model_tokens": "model_tokens",
    "lengths/tool_tokens": "tool_tokens",
    "lengths/truncated_ratio": "truncated_ratio",
}


def metrics_by(rows: Iterable[dict], key: Callable[[dict], object]) -> dict[object, dict[str, float | None]]:
    """`behaviour_metrics` per group of sample rows (each row: ``trajectory`` + ``correct``), groups sorted."""
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return {
        k: behaviour_metrics([r["trajectory"] for r in g], [r.get("correct") for r in g])
        for k, g in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    }


def _sort_key(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def has_answer(traj: dict) -> bool:
    """The response boxed an answer somewhere in its own text."""
    return first_answer_offset(traj) is not None
