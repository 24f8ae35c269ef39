"""Batched AugMix (Hendrycks et al., ICLR 2020) with the PixMix ops, as pure torch functions.

Per image, as the reference ``aug()`` of AugMix's ``imagenet.py`` (trained without the JSD
consistency loss, as the PixMix paper compares it):

1. chain weights ``w ~ Dirichlet(alpha, ..., alpha)`` (``width`` of them) and
   ``m ~ Beta(alpha, alpha)``;
2. each of the ``width`` chains applies ``depth`` ops in sequence to the image (``depth = -1``:
   uniform on 1..3 per chain), each op drawn uniformly from the op list with a fresh level
   ``U(0.1, severity)``: the same ops and level -> parameter mapping as PixMix
   (``pixmix.op_params``; PixMix's reference code took them from AugMix's);
3. ``mixed = (1 - m) * image + m * sum_i w_i * chain_i`` in [0, 1] (a convex mix, so
   normalising afterwards equals the reference's mixing of normalised tensors).

ImageNet settings: width 3, depth -1, severity 1, alpha 1. Every choice is drawn up front on
the generator's device and copied to the host once (the "plan"); the chains then run step by
step, every chain that is still going in one batched call per step, with the same op machinery
as PixMix and the same ``strategy`` rule: ``grouped`` (one call per op on the rows that drew
it, CPU default) or ``dense`` (the dense kernels, one block per op family, CUDA default); no
device value is read on the host. ``trace=True`` returns every choice, per image, for
``pil_oracle.augmix_replay``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._cpu_split import (
    balanced_bounds,
    default_host_workers,
    plan_part,
    run_split,
)
from dali_pixmix.augment._rows import put_rows, take_rows, to_device
from dali_pixmix.augment.distributions import beta, dirichlet
from dali_pixmix.augment.pixmix.api import pick_strategy
from dali_pixmix.augment.pixmix.grouped import augment_rows
from dali_pixmix.augment.pixmix.output import empty_output
from dali_pixmix.augment.pixmix.plan import op_param_values, op_params

RANDOM_DEPTH = (1, 3)  # depth -1: uniform on 1..3 ops per chain


@dataclass
class AugMixPlan:
    """Every choice for a batch, on the host; chain c of image b is column ``(c, b)``."""
    depth: torch.Tensor    # int64 [W, B]
    op: torch.Tensor       # int64 [D, W, B], D = the largest possible depth
    level: torch.Tensor    # float64 [D, W, B], uniform on [0.1, severity)
    negate: torch.Tensor   # bool [D, W, B], random sign for signed ops
    weights: torch.Tensor  # float32 [W, B], Dirichlet(alpha) per image
    m: torch.Tensor        # float32 [B], Beta(alpha, alpha)


def draw_augmix_plan(n: int, width: int, depth: int, severity: float, alpha: float,
                     n_ops: int, generator: torch.Generator | None, device) -> AugMixPlan:
    """Draw a batch's choices on ``device`` (uniforms in one call, then the Gamma variates of
    the weights) and copy them to the host."""
    if width < 1 or not (depth == -1 or depth >= 1) or n_ops < 1:
        raise ValueError(f"AugMix needs width >= 1, depth -1 or >= 1 and ops, got width={width}, "
                         f"depth={depth}, {n_ops} ops")
    if severity < 0.1:
        raise ValueError(f"severity must be >= 0.1 (levels are U(0.1, severity)), got {severity}")
    most = RANDOM_DEPTH[1] if depth == -1 else depth
    u = torch.rand(width + 3 * most * width, n, generator=generator, device=device,
                   dtype=torch.float64).cpu()
    depth_u, (op_u, level_u, sign_u) = u[:width], u[width:].view(3, most, width, n)
    if depth == -1:
        low, high = RANDOM_DEPTH
        depths = (low + depth_u * (high - low + 1)).long().clamp_(max=high)
    else:
        depths = torch.full((width, n), depth, dtype=torch.int64)
    weights = dirichlet(alpha, n, width, generator).cpu().t().float()
    return AugMixPlan(depth=depths, op=(op_u * n_ops).long().clamp_(max=n_ops - 1),
                      level=0.1 + (severity - 0.1) * level_u, negate=sign_u < 0.5,
                      weights=weights.contiguous(),
                      m=beta(alpha, alpha, n, generator).cpu().float())


def _augment(chains, rows, rows_dev, op, level, negate, ops, strategy: str) -> torch.Tensor:
    """``chains[rows[j]]`` augmented by ``ops[op[j]]`` at ``level[j]``: grouped or dense op
    machinery (grouped gathers each op's rows itself: no copy of all the rows first);
    ``rows_dev``: ``rows`` on the chains' device."""
    _, h, w, _ = chains.shape
    if strategy == "dense":
        from dali_pixmix.augment.pixmix.dense import apply_ops

        rows_u8 = take_rows(chains, rows_dev)
        return apply_ops(rows_u8, op, op_param_values(op, level, negate, ops, h, w), ops)
    return augment_rows(chains, rows, op, level, negate, ops)


def run_chains(images: torch.Tensor, plan: AugMixPlan, ops, strategy: str) -> torch.Tensor:
    """uint8 ``[W * B, H, W, 3]``: every chain's final image (row ``c * B + b``)."""
    width, n = plan.depth.shape
    chains = images.repeat(width, 1, 1, 1)
    depth = plan.depth.reshape(-1)
    for step in range(plan.op.shape[0]):
        rows = (depth > step).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            break
        op, level, negate = (t[step].reshape(-1)[rows] for t in (plan.op, plan.level,
                                                                   plan.negate))
        rows_dev = to_device(rows, images.device)
        out = _augment(chains, rows, rows_dev, op, level, negate, ops, strategy)
        put_rows(chains, rows_dev, out)
    return chains


def mix_chains(images: torch.Tensor, chains: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
    """float32 ``[B, H, W, 3]``: ``(1 - m) x + m sum_c w_c chain_c``, every image in [0, 1]."""
    width, n = plan.weights.shape
    dev = images.device
    weights = to_device(plan.weights, dev).view(width, n, 1, 1, 1)
    m = to_device(plan.m, dev).view(n, 1, 1, 1)
    mix = chains[:n].float().div_(255.0).mul_(weights[0])  # = 0 + that, exactly
    for c in range(1, width):
        mix.add_(chains[c * n:(c + 1) * n].float().div_(255.0).mul_(weights[c]))
    x = images.float().div_(255.0)
    return x.mul_(1.0 - m).add_(mix.mul_(m))


def _execute(images, plan: AugMixPlan, ops, strategy: str, out: torch.Tensor, output) -> None:
    """Run ``plan`` on ``images`` into ``out`` (float32 HWC, or ``output``'s format)."""
    mixed = mix_chains(images, run_chains(images, plan, ops, strategy), plan)
    out.copy_(mixed if output is None else output.convert(mixed))


def _execute_parts(images, plan: AugMixPlan, ops, strategy: str, workers: int, output):
    """The result of ``plan``; on CPU, contiguous image ranges of about equal work
    (``part_count``) run concurrently by ``workers`` single-threaded host workers (as
    PixMix's, see ``_host_pool``)."""
    out = empty_output(images, output)

    def part(s, e):
        _execute(images[s:e], plan_part(plan, s, e), ops, strategy, out[s:e], output)

    def bounds(parts):
        steps = torch.arange(plan.op.shape[0]).view(-1, 1, 1)
        active = steps < plan.depth.unsqueeze(0)  # [D, W, B]
        job_sample = active.nonzero(as_tuple=True)[2]
        no_rounds = torch.zeros((1, images.shape[0]), dtype=torch.long)
        return balanced_bounds(job_sample, plan.op[active], no_rounds, ops, parts)

    run_split(part, images, workers, bounds)
    return out


def augmix(images: torch.Tensor, width: int = 3, depth: int = -1, severity: float = 1,
           alpha: float = 1.0, all_ops: bool = True, generator: torch.Generator | None = None,
           trace: bool = False, *, output=None, strategy: str = "auto",
           host_workers: int | None = None):
    """AugMix a uint8 ``[B, H, W, 3]`` batch on its device (ImageNet defaults).

    Returns float32 ``[B, H, W, 3]`` in [0, 1], or the result in ``output``'s format (a
    ``pixmix.Normalized``); with ``trace=True`` a pair ``(out, traces)`` (see ``trace_of``).
    ``generator``: on the host (saves CUDA batches a device-to-host copy of the plan) or on the
    images' device. ``strategy``: ``auto`` (dense on CUDA, grouped on CPU), ``grouped`` or
    ``dense``; the same plan gives the same result either way (to a grey level on geometric
    ops, as for PixMix). ``host_workers``: on CPU, images are split among this many
    single-threaded host threads (default ``torch.get_num_threads()``, 1 for pictures under
    96 x 96 px; 0: on the caller's thread with torch's own threads); no change to the result.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"augmix: expected uint8 [B, H, W, 3], got {images.dtype} "
                         f"{tuple(images.shape)}")
    images = images.contiguous()
    ops = A.ALL_OPS if all_ops else A.OPS
    n, h, w, _ = images.shape
    plan_device = generator.device if generator is not None else images.device
    plan = draw_augmix_plan(n, width, depth, severity, alpha, len(ops), generator, plan_device)
    out = _execute_parts(images, plan, ops, pick_strategy(strategy, images, False),
                         default_host_workers(images, host_workers),
                         output)
    return (out, trace_of(plan, ops, h, w)) if trace else out


def trace_of(plan: AugMixPlan, ops, height: int, width: int) -> list[dict]:
    """Per image: ``{"chains": [[[op, param], ...] per chain], "weights": [float per chain],
    "m": float}``; ``param`` is the exact value given to the op (None for autocontrast /
    equalize)."""
    traces = []
    for b in range(plan.m.numel()):
        chains = []
        for c in range(plan.depth.shape[0]):
            steps = []
            for step in range(int(plan.depth[c, b])):
                name = ops[int(plan.op[step, c, b])]
                param = op_params(name, plan.level[step, c, b:b + 1],
                                  plan.negate[step, c, b:b + 1], height, width)
                steps.append([name, None if param is None else param.item()])
            chains.append(steps)
        traces.append({"chains": chains, "weights": plan.weights[:, b].tolist(),
                       "m": float(plan.m[b])})
    return traces
