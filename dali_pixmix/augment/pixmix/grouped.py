"""The grouped execution strategy of ``pixmix`` (the default on CPU).

Every augmentation of the batch (start images and partners alike) goes through one batched call
per op on exactly the samples that drew it; then the samples are ordered by their sequence of
mixing ops so that each round's add / multiply runs in place on contiguous runs of exactly the
samples that chose it (on CPU a few MB at a time, to stay in cache). On CPU the samples are
split into two contiguous ranges per torch thread (balanced by the planned work: ``_cpu_split``),
which as many single-threaded host workers take in turn. Least work, but the number of ops, and
the index groups, depend on the draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._constants import stream_safe_cache
from dali_pixmix.augment._cpu_split import balanced_bounds, plan_part, run_split
from dali_pixmix.augment._rows import put_rows, take_rows, to_device
from dali_pixmix.augment.pixmix.output import Normalized, empty_output
from dali_pixmix.augment.pixmix.plan import Jobs, Plan, collect_jobs, op_params


def _run_augmentations(images, plan: Plan, jobs: Jobs, ops) -> torch.Tensor:
    """uint8 ``[M, H, W, 3]``: job j's augmented image; one batched call per op."""
    return augment_rows(images, jobs.sample, jobs.op, plan.level[jobs.slot, jobs.sample],
                        plan.negate[jobs.slot, jobs.sample], ops)


def augment_rows(images, sample, op, level, negate, ops) -> torch.Tensor:
    """uint8 ``[M, H, W, 3]``: row j is ``ops[op[j]]`` at ``level[j]`` (sign ``negate[j]``)
    applied to ``images[sample[j]]``, one batched call per op (host index tensors)."""
    _, h, w, _ = images.shape
    dev = images.device
    out = torch.empty((sample.numel(), h, w, 3), dtype=images.dtype, device=dev)
    for op_index, name in enumerate(ops):
        sel = (op == op_index).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        param = op_params(name, level[sel], negate[sel], h, w)
        sources = take_rows(images, to_device(sample[sel], dev))
        put_rows(out, to_device(sel, dev), A.apply_op(sources, name, param))
    return out


def _start_images(images, augmented, plan: Plan, job_of) -> torch.Tensor:
    """uint8 start images: ``augment(orig)`` where the plan says so, else ``orig``."""
    start = images.clone()
    starters = plan.start_aug.nonzero(as_tuple=True)[0]
    if starters.numel():
        put_rows(start, to_device(starters, images.device),
                 take_rows(augmented, to_device(job_of[0, starters], images.device)))
    return start


_LOG2 = 0.6931471805599453


def _log_table(weight: torch.Tensor, offset: torch.Tensor | float = 0.0,
               floor: float = 0.0) -> torch.Tensor:
    """``[m, 256]``: weight * log(max(v / 255, floor)) + offset for every uint8 value v.

    The same float32 operations as applying them element-wise, so a gather from this table
    gives bit-identical results at a fraction of the cost of a per-pixel log (log 0 = -inf)."""
    return (_uint8_logs(floor, weight.device) * weight.view(-1, 1)).add_(offset)


@stream_safe_cache(maxsize=16)
def _uint8_logs(floor: float, device) -> torch.Tensor:
    """``[1, 256]`` float32: log(max(v / 255, floor)), computed once per device."""
    values = torch.arange(256, dtype=torch.float32, device=device).div_(255.0)
    return values.clamp_(min=floor).log_().view(1, 256)


@dataclass
class _Scratch:
    """Work buffers reused by every mixing round of a call (no per-round allocations)."""
    values: torch.Tensor  # float32, one chunk of images, flat
    index: torch.Tensor   # int32, same length

    @staticmethod
    def for_chunk(chunk: int, images: torch.Tensor) -> "_Scratch":
        numel = min(chunk, images.shape[0]) * math.prod(images.shape[1:])
        return _Scratch(torch.empty(numel, dtype=torch.float32, device=images.device),
                        torch.empty(numel, dtype=torch.int32, device=images.device))


def _lookup(table: torch.Tensor, values_u8: torch.Tensor, scratch: _Scratch,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample look-up ``table[i, values_u8[i]]`` as float32, shaped like ``values_u8``,
    written to ``out`` (contiguous) or to ``scratch.values``."""
    m, numel = values_u8.shape[0], values_u8.numel()
    # int32 flat indices into the stacked tables: half the memory traffic of an int64 gather.
    offsets = torch.arange(m, dtype=torch.int32, device=table.device).view(m, 1) * 256
    index = scratch.index[:numel].view(m, -1)
    index.copy_(values_u8.reshape(m, -1)).add_(offsets)
    out = scratch.values[:numel] if out is None else out
    torch.index_select(table.reshape(-1), 0, index.view(-1), out=out.view(-1))
    return out.view(values_u8.shape)


def _mix_in_place(mixed, partner_u8, a, b, use_multiply: bool, scratch: _Scratch,
                  start_u8=None) -> None:
    """One mixing round, in place on the contiguous float32 view ``mixed`` (then clamped).

    add: a x1 + (b x2 + (1 - a - b) / 2). multiply: (2 x1)**a (2 x2)**b / 2 evaluated as
    exp(a log x1 + b log max(x2, 5e-38) + (a + b - 1) log 2), equal to the reference's powers
    to float32 rounding at about half their cost; the logs of uint8-derived values come from
    256-entry tables. ``x2 = partner / 255`` as in the reference; ``start_u8`` (first round
    only) is the uint8 image that ``mixed`` is the exact scaling of.
    """
    a = a.view(-1, 1, 1, 1)
    b = b.view(-1, 1, 1, 1)
    if use_multiply:
        offset = (a + b - 1.0).view(-1, 1) * _LOG2
        exponent = _lookup(_log_table(b, offset, floor=5e-38), partner_u8, scratch)
        if start_u8 is not None:
            _lookup(_log_table(a), start_u8, scratch, out=mixed).add_(exponent).exp_()
        else:
            mixed.log_().mul_(a).add_(exponent).exp_()
    else:
        x2 = scratch.values[:mixed.numel()].view(mixed.shape).copy_(partner_u8).div_(255.0)
        mixed.mul_(a).add_(x2.mul_(b).add_((1.0 - a - b) / 2.0))
    mixed.clamp_(0.0, 1.0)


def _round_codes(plan: Plan) -> torch.Tensor:
    """int64 ``[k, B]``: 0 = no round, 1 = add, 2 = multiply."""
    k = plan.multiply.shape[0]
    active = torch.arange(k).view(k, 1) < plan.rounds.view(1, -1)
    return active.long() * (1 + plan.multiply.long())


def _sort_by_rounds(codes: torch.Tensor) -> torch.Tensor:
    """Order samples lexicographically by their sequence of round codes, so that in every
    round the samples doing the same op are contiguous runs (at most 2**(r+1) per round)."""
    k = codes.shape[0]
    weights = 3 ** torch.arange(k - 1, -1, -1, dtype=torch.int64).view(k, 1)
    return torch.sort((codes * weights).sum(0), stable=True).indices


def _runs(codes: torch.Tensor):
    """(start, stop, code) of the maximal runs of equal non-zero codes in a 1-D tensor."""
    if codes.numel() == 0:
        return []
    edges = (codes[1:] != codes[:-1]).nonzero(as_tuple=True)[0] + 1
    bounds = [0] + edges.tolist() + [codes.numel()]
    values = codes.tolist()
    return [(s, e, values[s]) for s, e in zip(bounds[:-1], bounds[1:]) if values[s]]


def _mix_block(mixed, start_u8, samples, codes, mixing, augmented, plan: Plan, job_of,
               scratch: _Scratch) -> None:
    """Every mixing round for the sorted samples ``samples``, in place on ``mixed``
    (which holds ``start_u8 / 255`` on entry). Per round, the partners of all these samples
    are gathered once; each run of samples sharing the round's op is then a contiguous slice."""
    dev = mixed.device
    samples_dev = to_device(samples, dev)
    a_all, b_all = to_device(plan.a[:, samples], dev), to_device(plan.b[:, samples], dev)
    for r in range(codes.shape[0]):
        runs = _runs(codes[r, samples])
        if not runs:
            break  # sorted by codes: no sample of this block has round r or later
        partners = _partners(mixing, augmented, job_of[r + 1, samples], samples_dev)
        for s, e, code in runs:
            _mix_in_place(mixed[s:e], partners[s:e], a_all[r, s:e], b_all[r, s:e],
                          use_multiply=code == 2, scratch=scratch,
                          start_u8=start_u8[s:e] if r == 0 else None)


def _partners(mixing, augmented, job_idx, samples_dev) -> torch.Tensor:
    """uint8 partners: the augmentation job ``job_idx[i]`` where it is >= 0, else sample i's
    mixing picture (rows for samples without this round are unused)."""
    partner = take_rows(mixing, samples_dev)
    from_aug = (job_idx >= 0).nonzero(as_tuple=True)[0]
    if from_aug.numel():
        dev = samples_dev.device
        from_jobs = take_rows(augmented, to_device(job_idx[from_aug], dev))
        put_rows(partner, to_device(from_aug, dev), from_jobs)
    return partner


def _execute(images, mixing_pics, plan: Plan, ops, chunk: int, out: torch.Tensor,
             output: "Normalized | None" = None) -> None:
    """Run ``plan`` into ``out``: all augmentations batched (uint8), then the float mixing.

    The mixing walks the samples sorted by their round ops, ``chunk`` at a time in one reused
    float buffer, so each op runs in place on contiguous runs; results are scattered back
    (first converted to ``output``'s format while the chunk is still in cache).
    """
    n = images.shape[0]
    if n == 0:
        return
    dev = images.device
    jobs = collect_jobs(plan)
    augmented = _run_augmentations(images, plan, jobs, ops)
    job_of = torch.full((plan.op.shape[0], n), -1, dtype=torch.int64)
    job_of[jobs.slot, jobs.sample] = torch.arange(jobs.sample.numel())
    start = _start_images(images, augmented, plan, job_of)
    codes = _round_codes(plan)
    order = _sort_by_rounds(codes)
    buffer = torch.empty((min(chunk, n), *images.shape[1:]), dtype=torch.float32, device=dev)
    scratch = _Scratch.for_chunk(chunk, images)
    for s in range(0, n, chunk):
        samples = order[s:s + chunk]
        samples_dev = to_device(samples, dev)
        mixed = buffer[:samples.numel()]
        start_u8 = take_rows(start, samples_dev)
        torch.div(start_u8, 255.0, out=mixed)
        _mix_block(mixed, start_u8, samples, codes, mixing_pics, augmented, plan, job_of, scratch)
        put_rows(out, samples_dev, mixed if output is None else output.convert(mixed))


def pixmix_grouped(images, mixing_pics, plan: Plan, ops, chunk: int, workers: int,
                   output: "Normalized | None" = None):
    """Result of ``plan`` (float32 HWC, or in ``output``'s format); on CPU split into
    contiguous sample ranges run by ``workers`` single-threaded host workers (``run_split``;
    0: on the caller's thread, with torch's own threads). With one worker the whole batch
    runs on it, since torch's intra-op threads, woken from a thread such as DALI's, cost more
    than they give."""
    out = empty_output(images, output)

    def part(s, e):
        _execute(images[s:e], mixing_pics[s:e], plan_part(plan, s, e), ops, chunk, out[s:e],
                 output)

    def bounds(parts):
        jobs = collect_jobs(plan)
        return balanced_bounds(jobs.sample, jobs.op, _round_codes(plan), ops, parts)

    run_split(part, images, workers, bounds)
    return out
