"""``pixmix()``: check the inputs, draw the plan, run it with the chosen strategy.

See the package docstring for the procedure; ``STRATEGIES`` and ``check_strategy`` are the
execution choices a caller (a pipeline stage) may validate ahead of the first batch."""
from __future__ import annotations

import math

import torch

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._cpu_split import default_host_workers
from dali_pixmix.augment.pixmix.dense import pixmix_dense
from dali_pixmix.augment.pixmix.grouped import pixmix_grouped
from dali_pixmix.augment.pixmix.output import Normalized
from dali_pixmix.augment.pixmix.plan import draw_plan, trace_of


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


def pick_strategy(strategy: str, images: torch.Tensor, cuda_graph: bool) -> str:
    """The strategy that runs on `images` ("auto": dense on CUDA, grouped on CPU), after
    `check_strategy` and the device rule of `cuda_graph`."""
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
            (default: ``torch.get_num_threads()``, 1 for pictures under 96 x 96 px); 0 runs on
            the caller's thread with torch's own threads (what a per-thread recorder such as
            ``op_log.OpLog`` sees). It does not change the result.
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
    if pick_strategy(strategy, images, cuda_graph) == "dense":
        out = pixmix_dense(images, mixing_pics, plan, ops, output, cuda_graph)
    else:
        out = pixmix_grouped(images, mixing_pics, plan, ops,
                             chunk_size or _default_chunk(images),
                             default_host_workers(images, host_workers),
                             output)
    if trace:
        return out, trace_of(plan, ops, h, w)
    return out
