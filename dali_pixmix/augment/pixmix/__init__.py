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

* ``grouped`` (the default on CPU): every augmentation of the batch (start images and partners
  alike) goes through one batched call per op on exactly the samples that drew it; then each
  round's add / multiply runs in place on contiguous runs of the samples that chose it. Least
  work, but the number of ops, and the index groups, depend on the draws.
* ``dense`` (the default on CUDA): a FIXED sequence of batch-wide kernels whatever the draws,
  with per-sample parameters and identity work where a sample did not draw an op; no device
  value is ever read on the host, and the sequence can be replayed from a CUDA graph
  (``cuda_graph=True``).

``trace=True`` also returns every choice, per sample, so that each output can be recomputed on
its own with PIL (``pil_oracle.replay``).

The modules, read top-down (each imports only those below it):

* ``api``: ``pixmix()`` and its execution options (``STRATEGIES``, ``check_strategy``);
* ``grouped`` and ``dense``: the two strategies; ``dense`` builds on ``_dense_plan`` (the plan
  as fixed-size arrays), ``_dense_ops`` (the kernels) and ``_cuda_graphs`` (the graph runner);
* ``plan``: the draws, the ops' parameters, the augmentation jobs and the per-sample trace;
  ``output``: the output format (``Normalized``);
* below them, the batched ops (``augment.ops``).
"""
from dali_pixmix.augment.pixmix.api import STRATEGIES, check_strategy, pick_strategy, pixmix
from dali_pixmix.augment.pixmix.output import Normalized, empty_output
from dali_pixmix.augment.pixmix.plan import (
    MIX_OPS,
    Plan,
    draw_plan,
    mix_add,
    mix_multiply,
    op_param_values,
    op_params,
    sample_ab,
    trace_of,
)

__all__ = ["MIX_OPS", "STRATEGIES", "Normalized", "Plan", "check_strategy", "draw_plan",
           "empty_output", "mix_add", "mix_multiply", "op_param_values", "op_params",
           "pick_strategy", "pixmix", "sample_ab", "trace_of"]
