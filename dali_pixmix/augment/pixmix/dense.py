"""The dense execution strategy of ``pixmix``: a FIXED sequence of batch-wide kernels.

Whatever the draws, a batch runs the same torch ops in the same order (only tensor sizes change
with the plan; under a CUDA graph not even those): the plan is turned on the host into fixed
arrays (``_dense_plan``), copied to the device in ONE non-blocking transfer from page-locked
memory, and then

1. all augmentations of the batch run as one block of kernels per op family (``_dense_ops``),
   writing into a uint8 table that also holds the images and mixing pictures;
2. the mixing runs as k rounds over the samples ordered by their number of rounds (most first),
   so round r covers a prefix of that order; per round, either op is ``base * scale[x2] +
   shift[x2]`` with two 256-entry tables per sample, so the same look-ups and one fused
   multiply-add serve ``add`` and ``multiply`` alike (``mix_round``), ``torch.where``
   choosing the base per sample;
3. the result is normalised if asked (``Normalized``) and put back in batch order.

No kernel's launch depends on a value on the device: no ``.item()``, no ``nonzero``, no
data-dependent shape, so a CUDA batch never waits for the GPU, and ``cuda_graph=True`` can
capture the sequence once per batch shape and replay it (``_cuda_graphs``). The sequence is
the same on every batch of a device (``offset_index`` is one kernel on CUDA, two on CPU).

Same plan, same result as the grouped strategy: the augmentations are bit-identical for the
colour ops and within one grey level for the geometric ones; the mixing agrees to float32
rounding (the multiply is evaluated as ``x1**a * q[x2]``).
"""
from __future__ import annotations

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._rows import put_rows, take_rows, to_device
from dali_pixmix.augment.pixmix._cuda_graphs import graph_runner
from dali_pixmix.augment.pixmix._dense_ops import augment_all, offset_index
from dali_pixmix.augment.pixmix._dense_plan import (
    FAMILIES,
    Shape,
    augmentation_arrays,
    capacities,
    family_index,
    fits,
    needs,
    pack,
    plan_arrays,
    unpack,
)
from dali_pixmix.augment.pixmix.plan import collect_jobs, draw_plan


def pixmix_dense(images, mixing_pics, plan, ops, output=None, cuda_graph: bool = False):
    """Run ``plan`` (``pixmix.Plan``) on uint8 ``images`` / ``mixing_pics`` ``[B, H, W, 3]``
    with the dense kernels: float32 ``[B, H, W, 3]`` in [0, 1], or ``output``'s format.

    ``cuda_graph``: on CUDA, replay a graph captured for this batch shape (sized by
    ``capacities``); a plan that does not fit it (about 1 batch in 10,000) runs eagerly."""
    n, h, w, _ = images.shape
    jobs = collect_jobs(plan)  # once: both the sizes and the arrays read them
    need = needs(plan, ops, jobs)
    rows = capacities(n, plan.multiply.shape[0], ops) if cuda_graph and n else None
    if rows is not None and fits(need, rows):
        runner = graph_runner(run, images.device, Shape(n, h, w, *rows), output)
        if runner is not None:
            return runner(images, mixing_pics,
                          plan_arrays(plan, ops, runner.shape, output, jobs))
    shape = Shape(n, h, w, *need)
    table = image_table(images, mixing_pics, shape)
    buf = device_buffer(plan_arrays(plan, ops, shape, output, jobs), shape, images.device)
    return run(table, buf, shape, output)


def image_table(images, mixing_pics, shape: Shape) -> torch.Tensor:
    """uint8 ``[shape.rows, H, W, 3]``: the images, the mixing pictures (rows left unset if
    None: nothing will read them), then room for the augmented images."""
    table = images.new_empty((shape.rows, *images.shape[1:]))
    table[:shape.batch].copy_(images)
    if mixing_pics is not None:
        table[shape.batch:2 * shape.batch].copy_(mixing_pics)
    return table


def device_buffer(values: dict, shape: Shape, device) -> torch.Tensor:
    """The packed plan on ``device``: one non-blocking copy from page-locked memory."""
    if torch.device(device).type == "cpu":
        return pack(values, shape)
    return pack(values, shape, pin=True).to(device, non_blocking=True)


def run(table: torch.Tensor, buf: torch.Tensor, shape: Shape, output=None) -> torch.Tensor:
    """The fixed kernel sequence: augment into ``table``, mix, normalise, reorder."""
    p = unpack(buf, shape)
    augment_all(table, p, shape)
    return _finish(mix(table, p, shape), p, shape, output)


# ----------------------------------------------------------------------------- mixing

def mix(table: torch.Tensor, p: dict, shape: Shape) -> torch.Tensor:
    """float32 ``[B, H*W*3]``: every sample's mixed image, in the mixing order."""
    n, numel = shape.batch, shape.height * shape.width * 3
    # v / 255 by the same operation that scales a uint8 image
    unit = torch.arange(256, dtype=torch.float32, device=table.device).div_(255.0)
    first = torch.where(p["first_multiply"].view(n, 1), unit.pow(p["first_a"].view(n, 1)), unit)
    start = take_rows(table, p["start_row"]).view(n, numel)
    x = lookup(first, start)
    done = 0
    for r, covered in enumerate(shape.round_rows):
        part = slice(done, done + covered)
        partner = take_rows(table, p["partner_row"][part]).view(covered, numel)
        mix_round(x[:covered], partner, p["a"][part], p["b"][part], p["multiply"][part],
                  unit, powered=r == 0)
        done += covered
    return x


def lookup(tables: torch.Tensor, values_u8: torch.Tensor, index=None) -> torch.Tensor:
    """``tables[i, values_u8[i, j]]``, shaped like ``values_u8`` ``[m, N]``; ``tables``
    ``[m, 256]``. Reads the flat tables with int32 indices (``index``, if the caller has them
    from ``table_index``): half the traffic of a gather's int64 ones."""
    index = table_index(values_u8) if index is None else index
    return tables.reshape(-1).index_select(0, index.view(-1)).view(values_u8.shape)


def table_index(values_u8: torch.Tensor) -> torch.Tensor:
    """int32 ``[m, N]``: ``256 i + values_u8[i, j]``."""
    m = values_u8.shape[0]
    rows = torch.arange(m, dtype=torch.int32, device=values_u8.device).mul_(256).view(m, 1)
    return offset_index(values_u8, rows)


def mix_round(x, partner_u8, a, b, multiply, unit, powered: bool = False) -> None:
    """One PixMix round in place on float32 ``x`` ``[m, N]`` (then clamped to [0, 1]).

    add: ``a x1 + (b x2 + (1 - a - b) / 2)``; multiply: ``(2 x1)**a * max(2 x2, 1e-37)**b / 2``
    evaluated as ``x1**a * q[x2]``, ``q = 2**(a - 1) * max(2 x2, 1e-37)**b``; ``x2 = partner /
    255``. Both are ``base * scale[x2] + shift[x2]`` with per-sample 256-entry tables, so one
    look-up of each and one fused multiply-add serve either op. ``a``, ``b``, ``multiply``:
    ``[m]``; ``unit``: float32 ``v / 255`` for v in 0..255; ``powered``: ``x`` already holds
    ``x1**a`` for the multiply rows (the first round reads it from a table)."""
    m = x.shape[0]
    a, b, multiply = a.view(m, 1), b.view(m, 1), multiply.view(m, 1)
    scale, shift = _round_tables(unit, a, b, multiply)
    index = table_index(partner_u8)
    base = x if powered else torch.where(multiply, x.pow(a), x)
    torch.addcmul(lookup(shift, partner_u8, index), base, lookup(scale, partner_u8, index),
                  out=x)
    x.clamp_(0.0, 1.0)


def _round_tables(unit, a, b, multiply):
    """float32 ``(scale, shift)`` ``[m, 256]`` of ``mix_round``."""
    add_shift = unit * b + (1.0 - a - b) / 2.0  # the reference's operations and order
    partner = (unit * 2.0).double().clamp_(min=1e-37).pow(b.double())
    q = partner.mul_(torch.pow(2.0, a.double() - 1.0)).float()
    return torch.where(multiply, q, a), torch.where(multiply, 0.0, add_shift)


def _finish(x, p: dict, shape: Shape, output) -> torch.Tensor:
    """``x`` (mixing order) normalised as ``output`` asks and put back in batch order."""
    x = x.view(shape.batch, shape.height, shape.width, 3)
    if output is None:
        out = torch.empty_like(x)
    else:
        rows = (p["mean"].repeat(shape.width), p["scale"].repeat(shape.width))
        x, out = output.convert(x, rows), output.empty(x.shape, x.device)
    put_rows(out, p["order"], x)
    return out


# ----------------------------------------------------------------------------- single ops

def apply_ops(images: torch.Tensor, op: torch.Tensor, params: torch.Tensor,
              ops=A.ALL_OPS) -> torch.Tensor:
    """uint8: ``ops[op[i]]`` with parameter ``params[i]`` (float64, as ``pixmix.op_params``
    gives it; anything for autocontrast / equalize) applied to ``images[i]``, by the dense
    kernels. One batch may mix every op."""
    n, h, w, _ = images.shape
    family = family_index(ops)[op]
    shape = Shape(n, h, w, tuple(int((family == f).sum()) for f in range(len(FAMILIES))), ())
    values = {}
    rows = augmentation_arrays(op, ops, params.double(), torch.arange(n), shape, values)
    table = image_table(images, None, shape)  # augmentations read only the images
    augment_all(table, unpack(device_buffer(values, shape, images.device), shape), shape)
    return take_rows(table, to_device(rows, images.device))


# ----------------------------------------------------------------------------- traffic

def sequence_traffic(images, mixing_pics, plan, ops, graph_capacities: bool = False,
                     output=None) -> tuple:
    """(kernels, estimated bytes) of the device sequence ``run`` for ``plan``, recorded by
    ``op_log.OpLog`` on this thread: sized exactly for the plan, or with the CUDA graph's
    ``capacities`` (its padded identity rows are work too). Bytes over images/s of a timed
    run is the bandwidth it needs."""
    from dali_pixmix.augment.op_log import OpLog

    n, h, w, _ = images.shape
    need = needs(plan, ops)
    rows = need
    if graph_capacities:  # (a plan that does not fit them runs eagerly: take the larger)
        caps = capacities(n, plan.multiply.shape[0], ops)
        rows = tuple(tuple(map(max, a, b)) for a, b in zip(need, caps))
    shape = Shape(n, h, w, *rows)
    table = image_table(images, mixing_pics, shape)
    buf = device_buffer(plan_arrays(plan, ops, shape, output), shape, images.device)
    with OpLog() as log:
        run(table, buf, shape, output)
    return len(log.kernels()), log.traffic()


def traffic_per_image(images, mixing_pics, k: int, beta: float, severity: float,
                      ops) -> tuple:
    """(kernels, eager bytes per image, bytes per image with the CUDA graph's capacities) of
    the device sequence for one plan drawn with seed 0 on the host (`sequence_traffic`)."""
    n = images.shape[0]
    plan = draw_plan(n, k, beta, severity, len(ops), torch.Generator().manual_seed(0), "cpu")
    kernels, eager = sequence_traffic(images, mixing_pics, plan, ops)
    _, graph = sequence_traffic(images, mixing_pics, plan, ops, graph_capacities=True)
    return kernels, eager / n, graph / n
