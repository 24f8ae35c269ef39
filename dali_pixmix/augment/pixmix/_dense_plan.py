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

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment.pixmix.plan import collect_jobs, op_param_values

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
    """``(name, dtype, size, fill)`` of every plan array the kernels read, in buffer order;
    ``fill`` pads a family's rows past its jobs with identity work."""
    g, lut, grey, sharp = shape.family_rows
    n, mixed = shape.batch, sum(shape.round_rows)
    f64, f32, i64, b8 = torch.float64, torch.float32, torch.int64, torch.bool
    return [
        ("geo_coeffs", f64, (g, 6), _IDENTITY_AFFINE), ("lut_param", f64, (lut,), 0),
        ("geo_sample", i64, (g,), 0), ("lut_sample", i64, (lut,), 0),
        ("lut_code", i64, (lut,), LUT_CODES.index("identity")),
        ("grey_sample", i64, (grey,), 0), ("sharp_sample", i64, (sharp,), 0),
        ("start_row", i64, (n,), 0), ("order", i64, (n,), 0), ("partner_row", i64, (mixed,), 0),
        ("grey_factor", f32, (grey,), 1), ("sharp_factor", f32, (sharp,), 1),
        ("a", f32, (mixed,), 1), ("b", f32, (mixed,), 0), ("first_a", f32, (n,), 1),
        ("mean", f32, (3,), 0), ("scale", f32, (3,), 0),
        ("grey_is_color", b8, (grey,), True), ("multiply", b8, (mixed,), False),
        ("first_multiply", b8, (n,), False),
    ]


def _offsets(shape: Shape):
    """``[(name, dtype, size, fill, byte offset)]`` and the buffer's length in bytes."""
    placed, offset = [], 0
    for name, dtype, size, fill in fields(shape):
        placed.append((name, dtype, size, fill, offset))
        offset += -(-math.prod(size) * dtype.itemsize // _ALIGN) * _ALIGN
    return placed, offset


def buffer_size(shape: Shape) -> int:
    """Bytes of the packed plan for ``shape``."""
    return _offsets(shape)[1]


def pack(values: dict, shape: Shape, pin: bool = False) -> torch.Tensor:
    """The plan arrays as one host uint8 buffer (page-locked if ``pin``). An array shorter
    than its field (along dim 0), or missing, is padded with the field's fill. Written through
    numpy: a hundred small torch ops would cost the host (and the GIL) a millisecond."""
    placed, nbytes = _offsets(shape)
    buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
    raw = buf.numpy()
    for name, dtype, size, fill, offset in placed:
        view = raw[offset:offset + math.prod(size) * dtype.itemsize]
        dst = view.view(_NUMPY[dtype]).reshape(size)
        done = 0
        if name in values:
            done = len(values[name])
            dst[:done] = values[name].numpy()
        dst[done:] = fill
    return buf


_NUMPY = {torch.float64: np.float64, torch.float32: np.float32, torch.int64: np.int64,
          torch.bool: np.bool_}


def unpack(buf: torch.Tensor, shape: Shape) -> dict:
    """Views of the plan arrays inside ``buf`` (host or device): no copies, no kernels."""
    placed, _ = _offsets(shape)
    return {name: buf[offset:offset + math.prod(size) * dtype.itemsize].view(dtype).view(size)
            for name, dtype, size, _, offset in placed}


# ----------------------------------------------------------------------------- sizes

def family_index(ops) -> torch.Tensor:
    """int64 ``[len(ops)]``: the family of each op of the op list (made once per op list;
    read only)."""
    return _family_index(tuple(ops))


@functools.lru_cache(maxsize=8)
def _family_index(ops: tuple) -> torch.Tensor:
    family = {name: f for f, (_, names) in enumerate(FAMILIES) for name in names}
    return torch.tensor([family[name] for name in ops], dtype=torch.int64)


def needs(plan, ops, jobs=None) -> tuple:
    """``(family_rows, round_rows)`` that ``plan`` needs exactly (``jobs``: its
    ``collect_jobs``, when the caller has them)."""
    jobs = collect_jobs(plan) if jobs is None else jobs
    per_family = torch.bincount(family_index(ops)[jobs.op], minlength=len(FAMILIES))
    k = plan.multiply.shape[0]
    with_rounds = torch.bincount(plan.rounds, minlength=k + 1)  # samples with exactly r rounds
    per_round = with_rounds.flip(0).cumsum(0).flip(0)[1:]  # samples with more than r rounds
    return tuple(per_family.tolist()), tuple(per_round.tolist())


@functools.lru_cache(maxsize=16)
def capacities(batch: int, k: int, ops: tuple) -> tuple:
    """``(family_rows, round_rows)`` that a random plan exceeds with probability ~1e-4:
    mean + 4 standard deviations + 4 of each count, at most the largest possible count
    (computed once per batch size, k and op list)."""
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

def plan_arrays(plan, ops, shape: Shape, output=None, jobs=None) -> dict:
    """Every array of ``fields(shape)`` for ``plan`` (host tensors); ``plan`` must fit
    ``shape`` (see ``needs`` / ``fits``). ``output``: a ``Normalized`` format, or None;
    ``jobs``: the plan's ``collect_jobs``, when the caller has them."""
    jobs = collect_jobs(plan) if jobs is None else jobs
    params = _job_params(plan, jobs, ops, shape.height, shape.width)
    values = {}
    rows = augmentation_arrays(jobs.op, ops, params, jobs.sample, shape, values)
    job_row = torch.full(plan.op.shape, -1, dtype=torch.int64)
    job_row[jobs.slot, jobs.sample] = rows
    values.update(_mixing_arrays(plan, job_row, shape))
    if output is not None:
        values["mean"], values["scale"] = output.host_values()
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
                                           shape))
    return rows


def _job_params(plan, jobs, ops, height: int, width: int) -> torch.Tensor:
    """float64 ``[M]``: each job's op parameter as ``op_params`` maps it (0 for none)."""
    return op_param_values(jobs.op, plan.level[jobs.slot, jobs.sample],
                           plan.negate[jobs.slot, jobs.sample], ops, height, width)


_AFFINE_SLOT = {"shear_x": 1, "shear_y": 3, "translate_x": 2, "translate_y": 5}


def _geometric_arrays(op, ops, params, samples, shape: Shape) -> dict:
    """PIL affine coefficients ``(a, b, c, d, e, f)`` per job (see ``ops.affine``): the
    identity with the parameter in its slot (shear_x: b, shear_y: d, translate_x: c,
    translate_y: f), or a rotation."""
    m = op.numel()
    coeffs = torch.tensor(_IDENTITY_AFFINE, dtype=torch.float64).repeat(m, 1)
    slot = torch.tensor([_AFFINE_SLOT.get(name, 0) for name in ops])[op]
    coeffs.scatter_(1, slot.view(m, 1), params.view(m, 1))
    is_rotate = op == ops.index("rotate") if "rotate" in ops else torch.zeros(m, dtype=torch.bool)
    rotation = A.rotation_matrices(params, shape.width, shape.height)
    return {"geo_coeffs": torch.where(is_rotate.view(m, 1), rotation, coeffs),
            "geo_sample": samples}


def _lut_arrays(op, ops, params, samples, shape: Shape) -> dict:
    codes = torch.tensor([LUT_CODES.index(n) if n in LUT_CODES else -1 for n in ops])
    return {"lut_code": codes[op], "lut_param": params, "lut_sample": samples}


def _grey_arrays(op, ops, params, samples, shape: Shape) -> dict:
    is_color = torch.tensor([n == "color" for n in ops], dtype=torch.bool)
    return {"grey_is_color": is_color[op], "grey_factor": params.float(),
            "grey_sample": samples}


def _sharp_arrays(op, ops, params, samples, shape: Shape) -> dict:
    return {"sharp_factor": params.float(), "sharp_sample": samples}


_FAMILY_ARRAYS = {"geometric": _geometric_arrays, "lut": _lut_arrays, "grey": _grey_arrays,
                  "sharp": _sharp_arrays}


def _mixing_arrays(plan, job_row: torch.Tensor, shape: Shape) -> dict:
    """Start rows, the mixing order and each round's partner rows and coefficients for the
    positions it covers (concatenated); positions past a sample's last round get the
    identity round (add, a = 1, b = 0)."""
    n, k = shape.batch, len(shape.round_rows)
    order = torch.sort(plan.rounds, descending=True, stable=True).indices
    active = torch.arange(k).view(k, 1) < plan.rounds[order].view(1, n)
    partner = torch.where(active & plan.partner_aug[:, order], job_row[1:, order], n + order)
    a = torch.where(active, plan.a[:, order], 1.0)
    multiply = active & plan.multiply[:, order]
    covered = torch.arange(n) < torch.tensor(shape.round_rows, dtype=torch.int64).view(k, 1)
    return {
        "order": order,
        "start_row": torch.where(plan.start_aug[order], job_row[0, order], order),
        "partner_row": partner[covered], "a": a[covered], "multiply": multiply[covered],
        "b": torch.where(active, plan.b[:, order], 0.0)[covered],
        "first_a": a[0] if k else torch.ones(n),
        "first_multiply": multiply[0] if k else torch.zeros(n, dtype=torch.bool),
    }
