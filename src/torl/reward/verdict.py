"""The outcome of one equivalence check (a light module: the caller's side never imports sympy)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of one check.

    `timed_out` means the verifier gave up before reaching a verdict (deadline, memory or
    recursion limit, or a crash on this input); such an answer counts as not equivalent.
    `gold_parsed` / `pred_parsed` are short printable forms of what was compared.
    """

    equivalent: bool
    timed_out: bool = False
    gold_parsed: str = ""
    pred_parsed: str = ""
    reason: str = ""
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
