"""The plan of a PixMix batch: every random choice, drawn once, and what it means.

``draw_plan`` draws all of a batch's choices (start augmentation, rounds, partners, mixing ops
and coefficients, and every augmentation's op, level and sign) from ONE ``torch.rand`` call and
copies them to the host once; the plan does not depend on how it is executed. The rest of this
module reads a plan the same way for both strategies: ``op_params`` / ``op_param_values`` map
levels to the ops' parameters as the reference does, ``collect_jobs`` lists the augmentations
to run, and ``trace_of`` records each sample's choices (``pil_oracle.replay`` recomputes a
sample from it). ``sample_ab``, ``mix_add`` and ``mix_multiply`` are the paper's mixing
coefficients and operations in their reference form.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dali_pixmix.augment import ops as A

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


# ----------------------------------------------------------------------------- jobs

@dataclass
class Jobs:
    """Augmentations to run: job j augments sample ``sample[j]`` for slot ``slot[j]``."""
    sample: torch.Tensor  # int64 [M]
    slot: torch.Tensor    # int64 [M]
    op: torch.Tensor      # int64 [M]


def collect_jobs(plan: Plan) -> Jobs:
    """The augmentations the plan asks for: the start images it augments and the partners
    of the rounds that happen."""
    k = plan.partner_aug.shape[0]
    rounds_idx = torch.arange(k).view(k, 1)
    needed = torch.cat([plan.start_aug.view(1, -1),
                        plan.partner_aug & (rounds_idx < plan.rounds.view(1, -1))], dim=0)
    slot, sample = needed.nonzero(as_tuple=True)
    return Jobs(sample=sample, slot=slot, op=plan.op[slot, sample])


def op_param_values(op, level, negate, ops, height: int, width: int) -> torch.Tensor:
    """float64 ``[M]``: parameter of ``ops[op[j]]`` at ``level[j]`` / ``negate[j]``, as
    ``op_params`` maps it (0 for autocontrast / equalize): the dense kernels' input."""
    zero = torch.zeros_like(level)
    candidates = [op_params(name, level, negate, height, width) for name in ops]
    table = torch.stack([zero if c is None else c.double() for c in candidates])
    return table.gather(0, op.view(1, -1)).view(-1)


# ----------------------------------------------------------------------------- trace

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
