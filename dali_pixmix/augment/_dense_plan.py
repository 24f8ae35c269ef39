"""Host side of the dense PixMix strategy: a plan's choices as fixed-size arrays.

The dense kernels read every choice from ONE byte buffer (copied to the device in one
non-blocking transfer). Its layout depends only on a ``Shape``: the batch and image size, how
many augmentation rows each op family gets and how many samples each mixing round covers.
Eagerly these are exactly what the plan needs; a CUDA graph uses fixed ``capacities`` instead,
the unused rows holding identity work (an identity affine map, an identity LUT, a blend factor
of 1, an ``add`` round with a = 1, b = 0), which leaves every result bit-identical.

Row layout of the uint8 image table the kernels work on (``Shape.rows``): the batch's images,
then its mixing pictures, then each family's augmented images.
Samples are mixed in ``order`` (most rounds first), so round r covers a prefix of the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment.pixmix import _collect_jobs, op_params

FAMILIES = (
    ("geometric", ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")),
    ("lut", ("autocontrast", "equalize", "posterize", "solarize", "brightness")),
    ("grey", ("color", "contrast")),
    ("sharp", ("sharpness",)),
)
LUT_CODES = ("autocontrast", "equalize", "posterize", "solarize", "brightness", "identity")
_IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_ALIGN = 8  # bytes: every field starts where its dtype (at most 8 bytes) may be viewed


@dataclass(frozen=True)
class Shape:
    """Every size that fixes the shapes of the dense kernel sequence."""
    batch: int
    height: int
    width: int
    family_rows: tuple  # augmented images per family, in FAMILIES order
    round_rows: tuple   # samples each mixing round covers (a prefix of the mixing order)

    @property
    def rows(self) -> int:
        """Rows of the uint8 image table: images, mixing pictures, augmented images."""
        return 2 * self.batch + sum(self.family_rows)

    def family_start(self, family: int) -> int:
        return 2 * self.batch + sum(self.family_rows[:family])


def fields(shape: Shape) -> list:
    """``(name, dtype, size)`` of every plan array the kernels read, in buffer order."""
    g, lut, grey, sharp = shape.family_rows
    n, mixed = shape.batch, sum(shape.round_rows)
    f64, f32, i64 = torch.float64, torch.float32, torch.int64
    return [
        ("geo_coeffs", f64, (g, 6)), ("lut_param", f64, (lut,)),
        ("geo_sample", i64, (g,)), ("lut_sample", i64, (lut,)), ("lut_code", i64, (lut,)),
        ("grey_sample", i64, (grey,)), ("sharp_sample", i64, (sharp,)),
        ("start_row", i64, (n,)), ("order", i64, (n,)), ("partner_row", i64, (mixed,)),
        ("grey_factor", f32, (grey,)), ("sharp_factor", f32, (sharp,)),
        ("a", f32, (mixed,)), ("b", f32, (mixed,)), ("first_a", f32, (n,)),
        ("mean", f32, (3,)), ("scale", f32, (3,)),
        ("grey_is_color", torch.bool, (grey,)), ("multiply", torch.bool, (mixed,)),
        ("first_multiply", torch.bool, (n,)),
    ]


def _offsets(shape: Shape):
    """``[(name, dtype, size, byte offset)]`` and the buffer's length in bytes."""
    placed, offset = [], 0
    for name, dtype, size in fields(shape):
        placed.append((name, dtype, size, offset))
        nbytes = math.prod(size) * torch.empty((), dtype=dtype).element_size()
        offset += -(-nbytes // _ALIGN) * _ALIGN
    return placed, offset


def buffer_size(shape: Shape) -> int:
    """Bytes of the packed plan for ``shape``."""
    return _offsets(shape)[1]


def pack(values: dict, shape: Shape, pin: bool = False) -> torch.Tensor:
    """The plan arrays as one host uint8 buffer (page-locked if ``pin``)."""
    placed, nbytes = _offsets(shape)
    buf = torch.zeros(nbytes, dtype=torch.uint8, pin_memory=pin)
    for name, dtype, size, offset in placed:
        count = math.prod(size) * torch.empty((), dtype=dtype).element_size()
        buf[offset:offset + count].view(dtype).copy_(values[name].reshape(-1))
    return buf


def unpack(buf: torch.Tensor, shape: Shape) -> dict:
    """Views of the plan arrays inside ``buf`` (host or device): no copies, no kernels."""
    placed, _ = _offsets(shape)
    views = {}
    for name, dtype, size, offset in placed:
        count = math.prod(size) * torch.empty((), dtype=dtype).element_size()
        views[name] = buf[offset:offset + count].view(dtype).view(size)
    return views


# ----------------------------------------------------------------------------- sizes

def family_index(ops) -> torch.Tensor:
    """int64 ``[len(ops)]``: the family of each op of the op list."""
    family = {name: f for f, (_, names) in enumerate(FAMILIES) for name in names}
    return torch.tensor([family[name] for name in ops], dtype=torch.int64)


def needs(plan, ops) -> tuple:
    """``(family_rows, round_rows)`` that ``plan`` needs exactly."""
    jobs = _collect_jobs(plan)
    per_family = torch.bincount(family_index(ops)[jobs.op], minlength=len(FAMILIES))
    k = plan.multiply.shape[0]
    per_round = [int((plan.rounds > r).sum()) for r in range(k)]
    return tuple(per_family.tolist()), tuple(per_round)


def capacities(batch: int, k: int, ops) -> tuple:
    """``(family_rows, round_rows)`` that a random plan exceeds with probability ~1e-4:
    mean + 4 standard deviations + 4 of each count, at most the largest possible count."""
    family = family_index(ops)
    rows = []
    for f in range(len(FAMILIES)):
        q = float((family == f).sum()) / len(ops)  # an augmentation falls in this family
        # Per sample: Binomial(1 + rounds, q / 2) jobs, rounds uniform on 0..k.
        mean = q / 2 * (1 + k / 2)
        var = q / 2 * (1 - q / 2) * (1 + k / 2) + (q / 2) ** 2 * ((k + 1) ** 2 - 1) / 12
        rows.append(_bound(batch, mean, var, (k + 1) * batch) if q > 0 else 0)
    rounds = []
    for r in range(k):
        p = (k - r) / (k + 1)  # P(rounds > r)
        rounds.append(_bound(batch, p, p * (1 - p), batch))
    return tuple(rows), tuple(rounds)


def _bound(batch: int, mean: float, var: float, most: int) -> int:
    return min(most, math.ceil(batch * mean + 4 * math.sqrt(batch * var) + 4))


def fits(need: tuple, rows: tuple) -> bool:
    """Whether a plan needing ``need`` fits in ``rows`` (both ``(family_rows, round_rows)``)."""
    return all(n <= c for want, have in zip(need, rows) for n, c in zip(want, have))


# ----------------------------------------------------------------------------- values

def plan_arrays(plan, ops, shape: Shape, output=None) -> dict:
    """Every array of ``fields(shape)`` for ``plan`` (host tensors); ``plan`` must fit
    ``shape`` (see ``needs`` / ``fits``). ``output``: a ``Normalized`` format, or None."""
    jobs = _collect_jobs(plan)
    params = _job_params(plan, jobs, ops, shape.height, shape.width)
    values = {}
    rows = augmentation_arrays(jobs.op, ops, params, jobs.sample, shape, values)
    job_row = torch.full(plan.op.shape, -1, dtype=torch.int64)
    job_row[jobs.slot, jobs.sample] = rows
    values.update(_mixing_arrays(plan, job_row, shape))
    mean, scale = output.host_values() if output is not None else (torch.zeros(3),) * 2
    values.update(mean=mean, scale=scale)
    return values


def augmentation_arrays(op, ops, params, samples, shape: Shape, values: dict) -> torch.Tensor:
    """Fill ``values`` with the arrays of the augmentation jobs ``ops[op[j]]`` (parameter
    ``params[j]``, float64) of image ``samples[j]``, grouped by family and padded to
    ``shape.family_rows``; returns each job's row in the image table (int64 ``[M]``)."""
    family = family_index(ops)[op]
    rows = torch.empty(op.numel(), dtype=torch.int64)
    for f, (name, _) in enumerate(FAMILIES):
        members = (family == f).nonzero(as_tuple=True)[0]
        rows[members] = shape.family_start(f) + torch.arange(members.numel())
        values.update(_FAMILY_ARRAYS[name](op[members], ops, params[members], samples[members],
                                           shape.family_rows[f], shape))
    return rows


def _job_params(plan, jobs, ops, height: int, width: int) -> torch.Tensor:
    """float64 ``[M]``: each job's op parameter as ``op_params`` maps it (0 for none)."""
    level = plan.level[jobs.slot, jobs.sample]
    negate = plan.negate[jobs.slot, jobs.sample]
    params = torch.zeros(jobs.op.numel(), dtype=torch.float64)
    for index, name in enumerate(ops):
        sel = jobs.op == index
        param = op_params(name, level[sel], negate[sel], height, width)
        if param is not None:
            params[sel] = param.double()
    return params


def _padded(values: torch.Tensor, rows: int, fill) -> torch.Tensor:
    """``values`` followed by ``fill`` up to ``rows`` entries (along dim 0)."""
    out = torch.empty((rows, *values.shape[1:]), dtype=values.dtype)
    out[:] = torch.as_tensor(fill, dtype=values.dtype)
    out[:values.shape[0]] = values
    return out


_AFFINE = {
    "shear_x": lambda p, one, zero: (one, p, zero, zero, one, zero),
    "shear_y": lambda p, one, zero: (one, zero, zero, p, one, zero),
    "translate_x": lambda p, one, zero: (one, zero, p, zero, one, zero),
    "translate_y": lambda p, one, zero: (one, zero, zero, zero, one, p),
}


def _geometric_arrays(op, ops, params, samples, rows: int, shape: Shape) -> dict:
    """PIL affine coefficients ``(a, b, c, d, e, f)`` per job (see ``ops.affine``)."""
    coeffs = torch.tensor(_IDENTITY_AFFINE, dtype=torch.float64).repeat(op.numel(), 1)
    for index, name in enumerate(ops):
        sel = op == index
        if name == "rotate":
            coeffs[sel] = A.rotation_matrices(params[sel], shape.width, shape.height)
        elif name in _AFFINE:
            p = params[sel]
            one, zero = torch.ones_like(p), torch.zeros_like(p)
            coeffs[sel] = torch.stack(_AFFINE[name](p, one, zero), dim=-1)
    return {"geo_coeffs": _padded(coeffs, rows, _IDENTITY_AFFINE),
            "geo_sample": _padded(samples, rows, 0)}


def _lut_arrays(op, ops, params, samples, rows: int, shape: Shape) -> dict:
    codes = torch.tensor([LUT_CODES.index(n) if n in LUT_CODES else -1 for n in ops])
    return {"lut_code": _padded(codes[op], rows, LUT_CODES.index("identity")),
            "lut_param": _padded(params, rows, 0.0), "lut_sample": _padded(samples, rows, 0)}


def _grey_arrays(op, ops, params, samples, rows: int, shape: Shape) -> dict:
    is_color = torch.tensor([n == "color" for n in ops], dtype=torch.bool)
    return {"grey_is_color": _padded(is_color[op], rows, True),
            "grey_factor": _padded(params.float(), rows, 1.0),
            "grey_sample": _padded(samples, rows, 0)}


def _sharp_arrays(op, ops, params, samples, rows: int, shape: Shape) -> dict:
    return {"sharp_factor": _padded(params.float(), rows, 1.0),
            "sharp_sample": _padded(samples, rows, 0)}


_FAMILY_ARRAYS = {"geometric": _geometric_arrays, "lut": _lut_arrays, "grey": _grey_arrays,
                  "sharp": _sharp_arrays}


def _mixing_arrays(plan, job_row: torch.Tensor, shape: Shape) -> dict:
    """Start rows, the mixing order and each round's partner rows and coefficients; positions
    past a sample's last round get the identity round (add, a = 1, b = 0)."""
    n = shape.batch
    order = torch.sort(plan.rounds, descending=True, stable=True).indices
    rounds = plan.rounds[order]
    start = torch.where(plan.start_aug[order], job_row[0, order], order)
    partner, a, b, multiply = [], [], [], []
    for r, covered in enumerate(shape.round_rows):
        pos = order[:covered]
        active = rounds[:covered] > r
        from_aug = active & plan.partner_aug[r, pos]
        partner.append(torch.where(from_aug, job_row[r + 1, pos], n + pos))
        a.append(torch.where(active, plan.a[r, pos], torch.ones(())))
        b.append(torch.where(active, plan.b[r, pos], torch.zeros(())))
        multiply.append(active & plan.multiply[r, pos])
    empty = torch.zeros(0)
    first = rounds > 0
    has_round = plan.a.shape[0] > 0
    return {
        "order": order, "start_row": start,
        "partner_row": torch.cat(partner) if partner else empty.long(),
        "a": torch.cat(a) if a else empty, "b": torch.cat(b) if b else empty,
        "multiply": torch.cat(multiply) if multiply else empty.bool(),
        "first_a": torch.where(first, plan.a[0, order], 1.0) if has_round else torch.ones(n),
        "first_multiply": first & plan.multiply[0, order] if has_round
        else torch.zeros(n, dtype=torch.bool),
    }
