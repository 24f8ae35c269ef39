"""Splitting a batch among CPU workers by an estimated per-sample cost (PixMix, AugMix), and
running the parts on the single-threaded host workers of ``_host_pool``."""
from __future__ import annotations

import torch

from dali_pixmix.augment._host_pool import host_workers

# Rough CPU cost of each step per 224 px image (ms, one thread); only steers the work split.
# (rotate: a 0-degree quarter of PixMix's rotations is a copy; translations are slice copies)
_OP_COST = {"autocontrast": 0.36, "equalize": 0.39, "posterize": 0.01, "rotate": 0.61,
            "solarize": 0.18, "shear_x": 0.6, "shear_y": 0.81, "translate_x": 0.13,
            "translate_y": 0.11, "color": 0.26, "contrast": 0.19, "brightness": 0.06,
            "sharpness": 0.3}
_MIX_COST = (0.0, 0.07, 0.33)  # by round code: none, add, multiply
_SAMPLE_COST = 0.1  # start image, partner gathers, result scatter
# Ranges per host worker, taken in turn by whichever worker is free: a worker slowed down (by
# other load on the cores, or a dearer range than estimated) holds the batch up by one small
# range, not by half the batch.
PARTS_PER_WORKER = 2


# Below this many pixels per picture (e.g. CIFAR's 32 x 32) a sample is too little work to
# split a batch among host workers: the per-range Python and dispatch overhead, contending for
# the GIL, outweighs the second core (2-core VM, from a thread like DALI's python-function
# thread: one worker makes 2.8x the images/s of two at 32 px, 1.2x at 64 px, the same at 96 px;
# two workers win from 112 px, 1.6x at 224 px).
HOST_SPLIT_MIN_PIXELS = 96 * 96


def default_host_workers(images: torch.Tensor, requested: int | None = None) -> int:
    """Host workers for a CPU batch: ``requested``, or when the caller names none
    ``torch.get_num_threads()``, 1 for small pictures (``HOST_SPLIT_MIN_PIXELS``)."""
    if requested is not None:
        return requested
    if images.shape[1] * images.shape[2] < HOST_SPLIT_MIN_PIXELS:
        return 1
    return torch.get_num_threads()


def part_count(workers: int, samples: int) -> int:
    """How many ranges ``samples`` are split into for ``workers`` host workers."""
    return max(1, min(samples, workers * PARTS_PER_WORKER))


def balanced_bounds(job_sample: torch.Tensor, job_op: torch.Tensor, round_codes: torch.Tensor,
                    ops, parts: int) -> list:
    """Split points of ``parts`` contiguous sample ranges with about equal estimated work.

    ``job_sample`` / ``job_op``: sample and op index of every augmentation job; ``round_codes``:
    int64 ``[k, B]`` mixing op per round (0 none, 1 add, 2 multiply)."""
    op_cost = torch.tensor([_OP_COST.get(name, 0.5) for name in ops], dtype=torch.float64)
    cost = torch.full((round_codes.shape[1],), _SAMPLE_COST, dtype=torch.float64)
    cost.index_add_(0, job_sample, op_cost[job_op])
    cost += torch.tensor(_MIX_COST, dtype=torch.float64)[round_codes].sum(0)
    cumulative = cost.cumsum(0)
    targets = cumulative[-1] * torch.arange(1, parts, dtype=torch.float64) / parts
    inner = torch.searchsorted(cumulative, targets).add_(1).clamp_(1, cost.numel() - 1)
    return [0] + inner.tolist() + [cost.numel()]


def plan_part(plan, start: int, stop: int):
    """The choices of samples ``start:stop`` of a plan dataclass whose every field is indexed by
    sample last."""
    return type(plan)(**{name: value[..., start:stop] for name, value in vars(plan).items()})


def run_split(run, images: torch.Tensor, workers: int, bounds_for) -> None:
    """``run(start, stop)`` over every sample of ``images``: on the caller's thread for CUDA
    batches (the caller's stream), an empty batch or ``workers == 0``; otherwise on
    ``workers`` single-threaded host workers, one range for one worker, else the ranges
    ``bounds_for(parts)`` (from ``balanced_bounds``) of ``part_count`` parts. Each sample's
    result depends only on its own choices, so the split does not change the output."""
    n = images.shape[0]
    if images.is_cuda or n == 0 or workers == 0:
        run(0, n)
        return
    workers = min(workers, n)
    run_parts(run, bounds_for(part_count(workers, n)) if workers > 1 else [0, n], workers)


def run_parts(run, bounds: list, workers: int | None = None) -> None:
    """``run(start, stop)`` for every range of ``bounds`` (from ``balanced_bounds``),
    concurrently on ``workers`` single-threaded host workers (default: one per range), each
    taking the next range when it is free; a worker's error is raised here."""
    parts = len(bounds) - 1
    pool = host_workers(workers or parts)
    list(pool.map(lambda i: run(bounds[i], bounds[i + 1]), range(parts)))
