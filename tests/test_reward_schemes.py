"""Reward schemes: torl, binary, the exec-penalty ablation and its documented edge cases."""

import pytest

from torl.reward import REWARD_SCHEMES, get_scheme, score
from torl.sandbox.result import ExecResult, ExecStatus

CORRECT = r"... so the answer is $\boxed{\frac{1}{2}}$."
WRONG = r"... so the answer is $\boxed{3}$."


def test_torl_and_binary():
    assert score(CORRECT, "0.5").reward == 1.0
    r = score(WRONG, "0.5")
    assert (r.reward, r.correct, r.extracted, r.reason) == (-1.0, False, "3", "wrong")
    assert score("no box", "0.5").reason == "no_answer" and score("no box", "0.5").reward == -1.0
    assert score(CORRECT, "0.5", "binary").reward == 1.0 and score(WRONG, "0.5", "binary").reward == 0.0


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="binary, torl, torl_exec_penalty"):
        score(CORRECT, "1", "paper")
    assert set(REWARD_SCHEMES) == {"torl", "binary", "torl_exec_penalty"}


def test_exec_penalty_is_additive_once_and_spares_code_free_responses():
    failed = [ExecResult(ExecStatus.OK), ExecResult(ExecStatus.ERROR), ExecResult(ExecStatus.TIMEOUT)]
    s = "torl_exec_penalty"
    assert score(CORRECT, "0.5", s).reward == 1.0           # no code: no penalty
    assert score(WRONG, "0.5", s, calls=[]).reward == -1.0
    assert score(CORRECT, "0.5", s, calls=[ExecResult(ExecStatus.OK)]).reward == 1.0
    r = score(CORRECT, "0.5", s, calls=failed)
    assert (r.reward, r.exec_penalty, r.failed_calls, r.reason) == (0.5, -0.5, 2, "correct")
    assert score(WRONG, "0.5", s, calls=failed).reward == -1.5
    assert score(CORRECT, "0.5", "torl", calls=failed).reward == 1.0  # other schemes ignore calls


def test_call_shapes_and_our_own_failures():
    s = "torl_exec_penalty"
    assert score(CORRECT, "0.5", s, calls=[{"status": "memory"}]).reward == 0.5
    assert score(CORRECT, "0.5", s, calls=[("print(1)", ExecResult(ExecStatus.OUTPUT_LIMIT))]).reward == 0.5
    assert score(CORRECT, "0.5", s, calls=[{"code": "x", "result": {"status": "error"}}]).reward == 0.5
    # sandbox_error is our infrastructure failing, never the model's code
    assert score(CORRECT, "0.5", s, calls=[ExecResult(ExecStatus.SANDBOX_ERROR)]).reward == 1.0
    with pytest.raises(ValueError, match="no recognizable status"):
        score(CORRECT, "0.5", s, calls=[{"status": "exploded"}])


def test_get_scheme():
    assert get_scheme("torl").incorrect == -1.0
