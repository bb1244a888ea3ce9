"""Answer extraction, equivalence checking (math-verify, hang-proof) and reward schemes.

    extract_answer(text)            final answer of a response (last box outside code blocks)
    extract_boxed(text)             boxed answer of any text (gold answers from dataset solutions):
                                    the last box, or a final run of boxes joined (`1, -2`)
    check(gold, pred) -> Verdict    equivalence with parsed forms and reason, under a deadline;
                                    either side may be written in several boxes (its parts)
    is_equivalent(gold, pred)       just the bool
    can_parse(answer)               whether a gold answer is checkable at all
    score(text, gold, scheme)       RewardResult(reward, correct, extracted, reason)

Nothing here imports sympy in the caller's process: checks run in warm worker processes
(`torl.reward.pool`), so a pathological answer can cost at most its deadline.
"""

from __future__ import annotations

from torl.reward.extract import extract_answer, extract_boxed, strip_code_blocks
from torl.reward.pool import (
    DEFAULT_TIMEOUT_S,
    VerifierPool,
    VerifierUnavailable,
    default_pool,
)
from torl.reward.schemes import (
    REWARD_SCHEMES,
    RewardResult,
    RewardScheme,
    count_failed_calls,
    get_scheme,
    score,
)
from torl.reward.verdict import Verdict


def check(gold: str, predicted: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """Is `predicted` (a bare answer) equivalent to `gold`? Thread-safe; ends within `timeout_s`
    of a worker picking it up (an overrun returns `timed_out=True`, not equivalent)."""
    return default_pool().check(gold, predicted, timeout_s=timeout_s)


async def acheck(gold: str, predicted: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """`check` for event loops."""
    return await default_pool().acheck(gold, predicted, timeout_s=timeout_s)


def is_equivalent(gold: str, predicted: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """`check(...).equivalent`."""
    return check(gold, predicted, timeout_s=timeout_s).equivalent


def can_parse(answer: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether a gold answer parses into something checkable (math, a choice letter, or text)."""
    return default_pool().parseable(answer, timeout_s=timeout_s)


__all__ = [
    "DEFAULT_TIMEOUT_S", "REWARD_SCHEMES", "RewardResult", "RewardScheme", "Verdict", "VerifierPool",
    "VerifierUnavailable", "acheck", "can_parse", "check", "count_failed_calls", "default_pool",
    "extract_answer", "extract_boxed", "get_scheme", "is_equivalent", "score", "strip_code_blocks",
]
