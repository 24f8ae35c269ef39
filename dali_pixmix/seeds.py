"""Seeds of the package's random streams, derived from the run's seed and integer keys.

A training run's randomness is split into streams named by integers: the data order of an
epoch is `(seed, epoch)`, the PixMix stage's draws for batch n of rank r are `(stage seed of
rank r, stream, n)`. Each stream is seeded from its name alone, never from how many draws
came before, so a run resumed at any step draws exactly what an uninterrupted run draws there,
and a stream that runs ahead (DALI prefetches batches) cannot shift another. A per-step
transform on the training device (e.g. a batch-level label mix) should seed its generator the
same way, e.g. `derive_seed(seed, rank, step)`, rather than advance one generator per epoch.
"""
from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed for the stream named by the non-negative integers `keys` (numpy's
    `SeedSequence` hashing: nearby keys give unrelated seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's stream, below 2**30 so that `+ rank` stays a valid int32."""
    return derive_seed(seed, epoch) % (1 << 30)
