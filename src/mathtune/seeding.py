"""One seed for every random number generator a run draws from, so that the same seed gives the same run.

Kept apart from sft and eval so that either can seed without importing the other (sft imports the trainer).
"""

from __future__ import annotations

import random

from .errors import UserError

SEED_LIMIT = 2**32  # NumPy's generators take seeds in [0, 2**32)


def check_seed(flag: str, seed: object) -> None:
    """One line, before any work, for a seed that some generator would refuse with a traceback later."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{flag} must be a whole number from 0 to {SEED_LIMIT - 1}, got {seed!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators; one that is not installed is skipped (a generator without
    torch, such as vllm, takes its seed in its sampling parameters)."""
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
