"""Batched PixMix (Hendrycks et al., CVPR 2022) as pure torch functions.

``pixmix(images, mixing_pics, ...)`` runs the paper's per-sample procedure on a whole batch at
once, on the batch's device (CPU or CUDA), with every random choice drawn from one explicit
``torch.Generator``:

1. with p = 0.5 the start image is ``augment(orig)``, otherwise ``orig``;
2. ``rounds ~ U{0..k}``; each round mixes the running image with a partner that is, with
   p = 0.5 (``partner_aug_prob``; 1 or 0 give the paper's Table 5 ablations), a fresh
   ``augment(orig)`` or else the sample's mixing picture, by ``add`` or
   ``multiply`` (p = 0.5 each) with coefficients from ``sample_ab``, then clamps to [0, 1];
3. ``augment`` picks one op uniformly from ``OPS`` (or ``ALL_OPS``), draws
   ``level ~ U(0.1, severity)`` and maps it to the op's parameter exactly like the reference
   (integer truncation, random sign for rotate / shear / translate).

Images are uint8 ``[B, H, W, 3]``; the result is float32 ``[B, H, W, 3]`` in [0, 1], not yet
normalised (or normalised in a chosen layout, see ``Normalized``). All randomness is drawn up
front as ONE ``torch.rand`` call (the "plan") and copied to the host once (free with a CPU
generator); the plan does not depend on how it is executed. Two execution strategies, both
vectorised with no Python loop over samples, give the same result to float32 rounding:

* ``grouped`` (this module; the default on CPU): every augmentation of the batch (start images
  and partners alike) goes through one batched call per op on exactly the samples that drew
  it; then the samples are ordered by their sequence of mixing ops so that each round's add /
  multiply runs in place on contiguous runs of exactly the samples that chose it (on CPU a few
  MB at a time, to stay in cache). On CPU the samples are split into two contiguous ranges per
  torch thread (balanced by the planned work), which as many single-threaded host workers take
  in turn. Least work, but the number of ops, and the index groups, depend on the draws.
* ``dense`` (``dense.py``; the default on CUDA): a FIXED sequence of batch-wide kernels
  whatever the draws, with per-sample parameters and identity work where a sample did not
  draw an op; no device value is ever read on the host, and the sequence can be replayed
  from a CUDA graph (``cuda_graph=True``).

``trace=True`` also returns every choice, per sample, so that each output can be recomputed on
its own with PIL (``pil_oracle.replay``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._constants import stream_safe_cache
from dali_pixmix.augment._cpu_split import balanced_bounds, part_count, plan_part, run_parts
from dali_pixmix.augment._rows import put_rows, take_rows, to_device

MIX_OPS = ("add", "multiply")


# ----------------------------------------------------------------------------- mixing

def _ab_from_uniforms(beta: float, branch, ua, ub):
    """get_ab from three uniforms: Beta(beta, 1) = U**(1/beta), Beta(1, beta) = 1 - U**(1/beta)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    pa, pb = ua.pow(1.0 / beta), 1.0 - ub.pow(1.0 / beta)
    interpolate = branch < 0.5
    a = torch.where(interpolate, pa, 2.0 - pa)  # 1 + Beta(1, beta), as 1 + (1 - U**(1/beta))
    b = torch.where(interpolate, pb, -pb)
    return a.float(), b.float()


def sample_ab(beta: float, n: int, generator: torch.Generator | None = None, device=None):
    """Per-sample mixing coefficients ``(a, b)``, float32 ``[n]`` each, as the spec's get_ab.

    With p = 0.5: ``a ~ Beta(beta, 1)``, ``b ~ Beta(1, beta)``; otherwise
    ``a = 1 + Beta(1, beta)``, ``b = -Beta(1, beta)``; all draws independent (inverse-CDF
    sampling from ``generator``). ``device`` defaults to the generator's device.
    """
    if device is None:
        device = generator.device if generator is not None else "cpu"
    u = torch.rand(3, n, generator=generator, device=device, dtype=torch.float64)
    return _ab_from_uniforms(beta, u[0], u[1], u[2])


def _coeff(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(c, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))


def mix_add(x1: torch.Tensor, x2: torch.Tensor, a, b) -> torch.Tensor:
    """PixMix ``add`` in [-1, 1] space: ``a * x1 + b * x2 + (1 - a - b) / 2`` (not clamped).

    ``x1``, ``x2``: float ``[B, H, W, 3]`` in [0, 1]; ``a``, ``b``: ``[B]``.
    """
    a, b = _coeff(a, x1), _coeff(b, x1)
    offset = (1.0 - a - b) / 2.0
    return x1 * a + (x2 * b + offset)


def mix_multiply(x1: torch.Tensor, x2: torch.Tensor, a, b) -> torch.Tensor:
    """PixMix ``multiply`` in [0, 2] space: ``(2 x1)**a * max(2 x2, 1e-37)**b / 2`` (not clamped).

    Only the partner ``x2`` is kept away from 0 (``b`` may be negative; ``a`` is positive).
    """
    a, b = _coeff(a, x1), _coeff(b, x1)
    return (x1 * 2.0).pow(a) * (x2 * 2.0).clamp(min=1e-37).pow(b) / 2.0


# ----------------------------------------------------------------------------- the plan

@dataclass
class Plan:
    """Every random choice for a batch, on the host. Shapes: ``[B]`` or ``[k, B]`` / ``[k+1, B]``.

    Augmentation slot 0 is the start image; slot ``r + 1`` is round ``r``'s partner.
    """
    start_aug: torch.Tensor    # bool [B]
    rounds: torch.Tensor       # int64 [B], uniform on 0..k
    partner_aug: torch.Tensor  # bool [k, B]: partner is a fresh augment(orig)
    multiply: torch.Tensor     # bool [k, B]: mixing op is multiply (else add)
    a: torch.Tensor            # float32 [k, B]
    b: torch.Tensor            # float32 [k, B]
    op: torch.Tensor           # int64 [k+1, B], index into the op list
    level: torch.Tensor        # float64 [k+1, B], uniform on [0.1, severity)
    negate: torch.Tensor       # bool [k+1, B], random sign for signed ops


def draw_plan(n: int, k: int, beta: float, severity: float, n_ops: int,
              generator: torch.Generator | None, device, partner_aug_prob: float = 0.5) -> Plan:
    """Draw all of a batch's choices from ONE ``torch.rand`` call on ``device``, then copy once.

    ``partner_aug_prob``: probability that a round's partner is an augmented copy of the image
    (else the mixing picture)."""
    if k < 0 or n_ops < 1:
        raise ValueError(f"k must be >= 0 and the op list non-empty, got k={k}, {n_ops} ops")
    if not 0.0 <= partner_aug_prob <= 1.0:
        raise ValueError(f"partner_aug_prob must lie in [0, 1], got {partner_aug_prob}")
    if severity < 0.1:
        raise ValueError(f"severity must be >= 0.1 (levels are U(0.1, severity)), got {severity}")
    rows = 2 + 2 * k + 3 * k + 3 * (k + 1)
    u = torch.rand(rows, n, generator=generator, device=device, dtype=torch.float64).cpu()
    start_aug, rounds_u = u[0] < 0.5, u[1]
    partner_u, mix_u = u[2:2 + k], u[2 + k:2 + 2 * k]
    ab_u, aug_u = u[2 + 2 * k:2 + 5 * k], u[2 + 5 * k:]
    a, b = _ab_from_uniforms(beta, ab_u[:k], ab_u[k:2 * k], ab_u[2 * k:])
    op_u, level_u, sign_u = aug_u[:k + 1], aug_u[k + 1:2 * k + 2], aug_u[2 * k + 2:]
    return Plan(
        start_aug=start_aug,
        rounds=(rounds_u * (k + 1)).long().clamp_(max=k),
        partner_aug=partner_u < partner_aug_prob,
        multiply=mix_u < 0.5,
        a=a, b=b,
        op=(op_u * n_ops).long().clamp_(max=n_ops - 1),
        level=0.1 + (severity - 0.1) * level_u,
        negate=sign_u < 0.5,
    )


def op_params(op: str, level: torch.Tensor, negate: torch.Tensor, height: int, width: int):
    """The reference's level -> parameter mapping (float64 ``level``), or None for
    autocontrast / equalize. Integer parameters are int64, float ones float64.

    ``int_param(level, M) = int(level * M / 10)``; translations use M = width / 3 (x) or
    height / 3 (y), i.e. the reference's 224 / 3 on 224 px crops."""
    def int_param(maxval):
        return torch.trunc(level * maxval / 10).long()

    def float_param(maxval):
        return level * maxval / 10

    sign = torch.where(negate, -1, 1)
    if op in ("autocontrast", "equalize"):
        return None
    table = {
        "posterize": lambda: 4 - int_param(4),
        "solarize": lambda: 256 - int_param(256),
        "rotate": lambda: int_param(30) * sign,
        "shear_x": lambda: float_param(0.3) * sign,
        "shear_y": lambda: float_param(0.3) * sign,
        "translate_x": lambda: int_param(width / 3) * sign,
        "translate_y": lambda: int_param(height / 3) * sign,
    }
    if op in table:
        return table[op]()
    if op in ("color", "contrast", "brightness", "sharpness"):
        return float_param(1.8) + 0.1
    raise ValueError(f"unknown op {op!r}; expected one of {A.ALL_OPS}")


# ----------------------------------------------------------------------------- output format

@dataclass(frozen=True)
class Normalized:
    """An output format for ``pixmix``: ``(x - mean) * (1 / std)`` per RGB channel of the
    [0, 1] result (float32 maths, as DALI's crop_mirror_normalize), stored as ``dtype``
    (float32 / float16) in layout ``"HWC"`` (``[B, H, W, 3]``) or ``"CHW"`` (``[B, 3, H, W]``)."""
    mean: tuple
    std: tuple
    layout: str = "HWC"
    dtype: torch.dtype = torch.float32

    def __post_init__(self):
        if self.layout not in ("HWC", "CHW") or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Normalized needs 3 means and stds and layout HWC or CHW, got "
                             f"{self.mean}, {self.std}, {self.layout!r}")

    def empty(self, shape, device) -> torch.Tensor:
        n, h, w, c = shape
        size = (n, c, h, w) if self.layout == "CHW" else (n, h, w, c)
        return torch.empty(size, dtype=self.dtype, device=device)

    def convert(self, x: torch.Tensor, rows: tuple | None = None) -> torch.Tensor:
        """Normalise float32 ``[m, H, W, 3]`` in place and return it in this format.

        ``rows``: the float32 ``(mean, 1 / std)`` rows ``[W * 3]`` on ``x``'s device, if the
        caller has them (default: cached per device)."""
        m, h, w, _ = x.shape
        mean, scale = rows if rows is not None else self.rows(w, x.device)
        x.view(m, h, w * 3).sub_(mean).mul_(scale)
        if self.layout == "CHW":
            return x.permute(0, 3, 1, 2).to(self.dtype, memory_format=torch.contiguous_format)
        return x if self.dtype == torch.float32 else x.to(self.dtype)

    def rows(self, width: int, device) -> tuple:
        """float32 mean and 1 / std repeated along an RGB row, ``[width * 3]`` each."""
        return _channel_rows(self.mean, self.std, width, device)

    def host_values(self) -> tuple:
        """float32 ``(mean, 1 / std)``, ``[3]`` each, on the host: the values of ``rows``."""
        return (torch.tensor(self.mean, dtype=torch.float32),
                1.0 / torch.tensor(self.std, dtype=torch.float32))


@stream_safe_cache(maxsize=16)
def _channel_rows(mean: tuple, std: tuple, width: int, device) -> tuple:
    """float32 mean and 1 / std repeated along an RGB row, ``[width * 3]`` each, on ``device``
    (created once: no per-batch copy). A broadcast over the innermost size-3 dimension would
    not vectorise; whole rows do."""
    mean, scale = Normalized(mean, std).host_values()
    return to_device(mean.repeat(width), device), to_device(scale.repeat(width), device)


# ----------------------------------------------------------------------------- execution

@dataclass
class _Jobs:
    """Augmentations to run: job j augments sample ``sample[j]`` for slot ``slot[j]``."""
    sample: torch.Tensor  # int64 [M]
    slot: torch.Tensor    # int64 [M]
    op: torch.Tensor      # int64 [M]


def _collect_jobs(plan: Plan) -> _Jobs:
    k = plan.partner_aug.shape[0]
    rounds_idx = torch.arange(k).view(k, 1)
    needed = torch.cat([plan.start_aug.view(1, -1),
                        plan.partner_aug & (rounds_idx < plan.rounds.view(1, -1))], dim=0)
    slot, sample = needed.nonzero(as_tuple=True)
    return _Jobs(sample=sample, slot=slot, op=plan.op[slot, sample])


def _run_augmentations(images, plan: Plan, jobs: _Jobs, ops) -> torch.Tensor:
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


def op_param_values(op, level, negate, ops, height: int, width: int) -> torch.Tensor:
    """float64 ``[M]``: parameter of ``ops[op[j]]`` at ``level[j]`` / ``negate[j]``, as
    ``op_params`` maps it (0 for autocontrast / equalize): the dense kernels' input."""
    zero = torch.zeros_like(level)
    candidates = [op_params(name, level, negate, height, width) for name in ops]
    table = torch.stack([zero if c is None else c.double() for c in candidates])
    return table.gather(0, op.view(1, -1)).view(-1)


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
    jobs = _collect_jobs(plan)
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


def empty_output(images: torch.Tensor, output: "Normalized | None") -> torch.Tensor:
    """The result buffer for a batch like ``images``: float32 HWC, or in ``output``'s format."""
    if output is None:
        return torch.empty(images.shape, dtype=torch.float32, device=images.device)
    return output.empty(images.shape, images.device)


def _execute_parts(images, mixing_pics, plan: Plan, ops, chunk: int, workers: int,
                   output: "Normalized | None" = None):
    """Result of ``plan`` (float32 HWC, or in ``output``'s format); on CPU split into
    contiguous sample ranges (``part_count``) run concurrently by ``workers`` single-threaded
    host workers (see ``_host_pool``). Each sample's result depends only on its own choices, so
    the split does not change the output."""
    out = empty_output(images, output)
    workers = 1 if images.is_cuda else min(workers, images.shape[0])
    if workers <= 1:
        _execute(images, mixing_pics, plan, ops, chunk, out, output)
        return out
    jobs = _collect_jobs(plan)
    bounds = balanced_bounds(jobs.sample, jobs.op, _round_codes(plan), ops,
                             part_count(workers, images.shape[0]))

    def part(s, e):
        _execute(images[s:e], mixing_pics[s:e], plan_part(plan, s, e), ops, chunk, out[s:e],
                 output)

    run_parts(part, bounds, workers)
    return out


# ----------------------------------------------------------------------------- public API

def _check_inputs(images: torch.Tensor, mixing_pics: torch.Tensor) -> None:
    for name, t in (("images", images), ("mixing_pics", mixing_pics)):
        if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[-1] != 3:
            raise ValueError(f"pixmix: {name} must be uint8 [B, H, W, 3], got {t.dtype} "
                             f"{tuple(t.shape)}")
    if images.shape != mixing_pics.shape or images.device != mixing_pics.device:
        raise ValueError(
            f"pixmix: images {tuple(images.shape)} on {images.device} and mixing_pics "
            f"{tuple(mixing_pics.shape)} on {mixing_pics.device} must match (one cropped mixing "
            "picture per sample, same device)")


STRATEGIES = ("auto", "grouped", "dense")


def check_strategy(strategy: str, cuda_graph: bool) -> None:
    """The device-independent rules of `pixmix`'s execution choices (a stage checks them when
    it is built, `pixmix` on every call)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"PixMix strategy must be one of {STRATEGIES}, got {strategy!r}")
    if cuda_graph and strategy == "grouped":
        raise ValueError("PixMix cuda_graph needs the dense strategy (or auto, dense on CUDA): "
                         "the grouped strategy's kernels depend on the draws")


def _pick_strategy(strategy: str, images: torch.Tensor, cuda_graph: bool) -> str:
    check_strategy(strategy, cuda_graph)
    if strategy == "auto":
        strategy = "dense" if images.is_cuda else "grouped"
    if cuda_graph and (strategy != "dense" or not images.is_cuda):
        raise ValueError("pixmix: cuda_graph=True needs CUDA images and the dense strategy, got "
                         f"{images.device} images and strategy {strategy!r}")
    return strategy


_CPU_CHUNK_BYTES = 4 << 20


def _default_chunk(images: torch.Tensor) -> int:
    # On CPU, ~4 MB of float32 per chunk keeps the mixing in cache; on GPU one chunk is fastest.
    if images.is_cuda:
        return max(1, images.shape[0])
    return max(1, _CPU_CHUNK_BYTES // max(1, 4 * math.prod(images.shape[1:])))


def pixmix(images: torch.Tensor, mixing_pics: torch.Tensor, k: int = 4, beta: float = 4.0,
           severity: float = 1, all_ops: bool = True, generator: torch.Generator | None = None,
           trace: bool = False, *, chunk_size: int | None = None,
           host_workers: int | None = None, output: "Normalized | None" = None,
           strategy: str = "auto", cuda_graph: bool = False, partner_aug_prob: float = 0.5):
    """PixMix a batch. Pure function: the same generator state gives the same output.

    Args:
        images: uint8 ``[B, H, W, 3]`` (after random-resized-crop + flip).
        mixing_pics: uint8 ``[B, H, W, 3]``, one already-cropped mixing picture per sample,
            on the same device as ``images``.
        k, beta, severity, all_ops: the paper's hyper-parameters (ImageNet: 4, 4.0, 1, True).
        generator: source of every random choice; on the images' device or on the CPU. The
            choices are needed on the host, so a CPU generator saves CUDA batches the one
            device-to-host copy (a stream synchronisation) of the drawn plan.
        trace: also return, per sample, the choices made (see ``trace_of``).
        chunk_size: samples mixed together (default: whole batch on CUDA, ~4 MB on CPU);
            it does not change the result.
        host_workers: on CPU, samples are split among this many single-threaded host threads
            (default: ``torch.get_num_threads()``); it does not change the result.
        output: return the result normalised, in this layout and dtype (see ``Normalized``)
            instead of float32 ``[B, H, W, 3]`` in [0, 1]; converted chunk by chunk.
        strategy: how the batch is executed (same choices, same result to float32 rounding):
            ``"grouped"`` runs each op once on exactly the samples that drew it (least work,
            best on CPU; ``chunk_size`` and ``host_workers`` apply to it); ``"dense"`` runs a
            fixed sequence of batch-wide kernels whatever the draws (``dense.py``: few,
            large kernels and no device synchronisation, for CUDA); ``"auto"`` picks dense on
            CUDA, grouped on CPU.
        cuda_graph: with the dense strategy on CUDA, capture the kernel sequence in a CUDA
            graph once per batch shape and replay it (static buffers; the result is a fresh
            tensor). Off by default.
        partner_aug_prob: probability that a round's partner is a fresh ``augment(orig)``
            rather than the mixing picture: 0.5 is PixMix; 1 mixes only augmented copies of
            the image, 0 only mixing pictures (the paper's Table 5 ablations).

    Returns:
        float32 ``[B, H, W, 3]`` in [0, 1] (or as ``output`` says); with ``trace=True`` a pair
        ``(out, traces)``.
    """
    _check_inputs(images, mixing_pics)
    images, mixing_pics = images.contiguous(), mixing_pics.contiguous()
    ops = A.ALL_OPS if all_ops else A.OPS
    n, h, w, _ = images.shape
    plan_device = generator.device if generator is not None else images.device
    plan = draw_plan(n, k, beta, severity, len(ops), generator, plan_device, partner_aug_prob)
    if _pick_strategy(strategy, images, cuda_graph) == "dense":
        from dali_pixmix.augment.dense import pixmix_dense  # dense.py builds on this module

        out = pixmix_dense(images, mixing_pics, plan, ops, output, cuda_graph)
    else:
        out = _execute_parts(images, mixing_pics, plan, ops,
                             chunk_size or _default_chunk(images),
                             host_workers or torch.get_num_threads(), output)
    if trace:
        return out, trace_of(plan, ops, h, w)
    return out


def _op_entry(plan: Plan, ops, slot: int, i: int, h: int, w: int):
    name = ops[int(plan.op[slot, i])]
    param = op_params(name, plan.level[slot, i:i + 1], plan.negate[slot, i:i + 1], h, w)
    return [name, None if param is None else param.item()]


def trace_of(plan: Plan, ops, height: int, width: int) -> list[dict]:
    """Per-sample record of a plan's choices:
    ``{"start": None | [op, param], "rounds": [{"partner": "mixing" | [op, param],
    "mix": "add" | "multiply", "a": float, "b": float}, ...]}``; ``param`` is the exact value
    given to the op (None for autocontrast / equalize)."""
    traces = []
    for i in range(plan.rounds.numel()):
        start = _op_entry(plan, ops, 0, i, height, width) if plan.start_aug[i] else None
        rounds = []
        for r in range(int(plan.rounds[i])):
            partner = (_op_entry(plan, ops, r + 1, i, height, width)
                       if plan.partner_aug[r, i] else "mixing")
            rounds.append({"partner": partner, "mix": MIX_OPS[int(plan.multiply[r, i])],
                           "a": float(plan.a[r, i]), "b": float(plan.b[r, i])})
        traces.append({"start": start, "rounds": rounds})
    return traces
