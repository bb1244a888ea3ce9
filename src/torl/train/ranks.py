"""Which process of a (torchrun / accelerate) launch this is; a plain run is rank 0 of 1."""

from __future__ import annotations

import os


def process_rank() -> int:
    """This process's global rank (torchrun / accelerate launch set RANK)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 alone writes the run directory's shared files and runs the held-out evaluation."""
    return process_rank() == 0
