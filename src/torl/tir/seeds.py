"""The one derivation of sampling seeds: every seed torl hands an engine comes from `derive_seed`.

Seeds form a tree: a run's base seed -> (step, rank, round) for one rank's generation batch ->
(sample) for one trajectory -> (turn) for one generate call; evaluation derives (benchmark,
question, sample) from its base seed. Hashing the whole path means no two branches collide by
arithmetic accident (ranks of one step, samples of one group), and a seed depends only on where
it sits in the tree, never on scheduling order -- so a resumed run or eval samples the same thing.
"""

from __future__ import annotations

import hashlib


def derive_seed(parent: int | None, *path: int | str) -> int | None:
    """The seed of branch `path` under `parent` (31 bits, what every engine accepts); None stays None."""
    if parent is None:
        return None
    digest = hashlib.blake2b(repr((int(parent), *path)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**31
