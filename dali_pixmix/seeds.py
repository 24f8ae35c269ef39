"""Seeds of the package's random streams, derived from the run's seed and integer keys.

A training run's randomness is split into streams named by integers: the data order of an
epoch is `(seed, epoch)` (`pipelines.loaders.epoch_order`), a pipeline stage's seed is `(stage
seed, seed, rank)` and its draws for batch n in random stream s are `(that seed, s, n)`
(`pipelines.stage.BatchStage`), the label mixing of a step is `(seed, LABEL_MIXING_STREAM, epoch,
rank, step)` (`training.methods`). Each stream is seeded from its name alone, never from how
many draws came before, so a run resumed at any step draws exactly what an uninterrupted run
draws there, and a stream that runs ahead (DALI prefetches batches) cannot shift another.
`SeedSequence` ignores trailing zero keys (`(a, b)` and `(a, b, 0, 0)` are one stream), so
names of different lengths must differ before their tails: the label mixing's carries a tag.
"""
from __future__ import annotations

import numpy as np

LABEL_MIXING_STREAM = 0x4C4D4958  # "LMIX": keeps (seed, epoch, rank, 0) apart from (seed, x, r)


def derive_seed(*keys: int) -> int:
    """A 32-bit seed for the stream named by the non-negative integers `keys` (numpy's
    `SeedSequence` hashing: nearby keys give unrelated seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
