"""Reward schemes: how a graded response becomes a number.

- `torl`: +1 correct, -1 otherwise (no answer, wrong, verifier timed out) — the ToRL paper.
- `binary`: 1 correct, 0 otherwise.
- `torl_exec_penalty`: the paper's "code executability" ablation — `torl` plus a -0.5 penalty
  for a response whose code failed to run (any call with status error / timeout / memory /
  output_limit). A response that ran no code is not penalized: it has no non-executable code
  (ToRL's released code penalized those too, which punishes plain reasoning, not broken code).

Correct answer + failed code: the penalty is additive, so the response gets +0.5 (and a wrong
one -1.5). Why: the paper describes the term as a penalty on top of the outcome reward, and
additive keeps the two orderings GRPO should see — every correct response beats every wrong
one (0.5 > -1), and among responses with the same outcome, code that ran beats code that
crashed. Dropping the penalty for correct responses would stop discouraging broken code exactly
where the model got lucky; overriding correctness would teach it that the answer matters less
than the tool. One penalty per response, however many calls failed: the paper's unit is the
response. `sandbox_error` calls are our infrastructure failing, not the model's code, and are
never penalized.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from torl.reward.extract import extract_graded_answer
from torl.reward.pool import DEFAULT_TIMEOUT_S, default_pool
from torl.sandbox.result import FAILED_STATUSES, ExecStatus

_PASSED = ExecStatus.OK.value
_OURS = ExecStatus.SANDBOX_ERROR.value


@dataclasses.dataclass(frozen=True)
class RewardResult:
    """`reason` is one of "correct", "wrong", "no_answer", "timeout" (the verifier gave up).

    `exec_penalty` is the (negative) amount the scheme added for failed code, 0.0 if none;
    `failed_calls` counts the model's calls that did not run cleanly.
    """

    reward: float
    correct: bool
    extracted: str | None
    reason: str
    exec_penalty: float = 0.0
    failed_calls: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RewardScheme:
    name: str
    description: str
    correct: float
    incorrect: float
    failed_code_penalty: float = 0.0  # added once when any call failed

    def reward(self, correct: bool, failed_calls: int) -> tuple[float, float]:
        """(reward, penalty applied)."""
        penalty = self.failed_code_penalty if failed_calls > 0 else 0.0
        return (self.correct if correct else self.incorrect) + penalty, penalty


REWARD_SCHEMES: dict[str, RewardScheme] = {
    s.name: s
    for s in (
        RewardScheme("torl", "+1 correct, -1 otherwise (ToRL paper)", 1.0, -1.0),
        RewardScheme("binary", "1 correct, 0 otherwise", 1.0, 0.0),
        RewardScheme("torl_exec_penalty", "torl, plus -0.5 when the response's code failed to run",
                     1.0, -1.0, failed_code_penalty=-0.5),
    )
}


def get_scheme(name: str) -> RewardScheme:
    """The scheme called `name`; ValueError naming the known schemes otherwise."""
    try:
        return REWARD_SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown reward scheme {name!r}; choose one of: {', '.join(sorted(REWARD_SCHEMES))}"
        ) from None


def call_status(call) -> str:
    """Status string of one call: a ToolCall (`.result.status`), an ExecResult (`.status`),
    a dict of either, or a `(code, result)` pair."""
    if isinstance(call, tuple) and len(call) == 2:
        call = call[1]
    if isinstance(call, dict):
        status = call["result"]["status"] if "result" in call else call.get("status")
    else:
        result = getattr(call, "result", call)
        status = getattr(result, "status", None)
    status = getattr(status, "value", status)  # ExecStatus is a str enum
    if status not in FAILED_STATUSES and status not in (_PASSED, _OURS):
        raise ValueError(f"call has no recognizable status ({status!r}); expected an ExecResult or a dict "
                         f"with 'status' in ok/error/timeout/memory/output_limit/sandbox_error")
    return str(status)


def count_failed_calls(calls: Iterable | None) -> int:
    """Calls whose code did not run cleanly; `sandbox_error` (our failure) does not count."""
    return sum(call_status(c) in FAILED_STATUSES for c in (calls or ()))


def score(response_text: str, gold: str, scheme: str = "torl", *, calls: Iterable | None = None,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> RewardResult:
    """Grade a response against the gold answer and turn the outcome into a reward.

    The answer is the last `\\boxed{}` outside code blocks (`extract_graded_answer`, no
    fallbacks: training rewards the format); a final run of several boxes (`\\boxed{(2, 2)} and
    \\boxed{(6, 2)}`) is compared part by part when the gold has several parts. `calls` (the
    trajectory's tool calls) matters only to `torl_exec_penalty`; None means no code ran.
    """
    chosen = get_scheme(scheme)
    failed = count_failed_calls(calls) if chosen.failed_code_penalty else 0
    extracted = extract_graded_answer(response_text)
    if extracted is None:
        correct, reason = False, "no_answer"
    else:
        verdict = default_pool().check(gold, extracted, timeout_s=timeout_s)
        correct = verdict.equivalent
        reason = "correct" if correct else ("timeout" if verdict.timed_out else "wrong")
    reward, penalty = chosen.reward(correct, failed)
    return RewardResult(reward, correct, extracted, reason, penalty, failed)
