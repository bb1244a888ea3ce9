"""Learning signal in GRPO: which groups carry gradient, and what to do with batches that carry none.

A GRPO group whose rewards are all equal has zero advantage everywhere, so with no KL term
(beta = 0) its policy-gradient loss and gradient are exactly zero: TRL's losses all scale each
token's term by its advantage. torl therefore never runs the forward/backward of a micro-batch
without a nonzero advantage. What the *optimizer* does on a step whose batch had no signal at all
is a choice (`zero_signal_updates`):

- ``coast`` (default): the optimizer still steps, on an all-zero gradient, exactly as TRL would
  after computing that zero gradient -- Adam's moments keep moving the weights along their recent
  direction (and weight decay applies). Identical dynamics to plain TRL, minus the wasted compute.
- ``skip``: no update at all -- the weights move only on evidence (Adam skips parameters without a
  gradient, so its moments and step count stay put).
- ``compute``: TRL unchanged: forward/backward on every micro-batch (the benchmark's baseline).

With beta > 0 the KL term has a gradient even at zero advantage, so nothing is skipped.

`informative_groups` judges groups from rewards (dynamic sampling, before TRL sees the batch);
TRL's advantages judge micro-batches (the skip, after).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ZERO_SIGNAL_UPDATES = ("coast", "skip", "compute")


def group_has_signal(rewards: Sequence[float | None]) -> bool:
    """Whether a group's rewards differ (None = unscorable, ignored as TRL's nan-aware baseline does)."""
    scored = {r for r in rewards if r is not None and not math.isnan(r)}
    return len(scored) > 1


def informative_groups(rewards: Sequence[float | None], group_size: int) -> list[bool]:
    """One flag per consecutive group of `group_size` rewards (TRL repeats each prompt G times in a row)."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    return [group_has_signal(rewards[i:i + group_size]) for i in range(0, len(rewards), group_size)]
