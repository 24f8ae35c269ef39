"""The torch side of the DALI training pipeline: batch-level per-image augmentation stages.

A stage is handed to DALI as a `dl_tensor_python_function`; it views the batch of uint8 crops
as a torch tensor (DLPack, zero copy, same device) and runs one of the package's batched
per-image methods on it: PixMix and its variants (`PixMixStage`), AugMix (`AugMixStage`) or
Cutout (`CutoutStage`). On CUDA its work is enqueued on DALI's current stream (`dali_stream`).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD, check_layout, dali_dtype
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.seeds import derive_seed


class BatchStage:
    """A batch-level per-image step of a DALI pipeline (a `dl_tensor_python_function`).

    Called with one DLPack capsule per sample (uint8 HWC crops on the pipeline's device), it
    views them as a torch batch and returns `apply(batch)`: float32 [0,1] HWC samples, or, for
    a stage made by `for_pipeline`, the pipeline's final normalised samples (its layout and
    dtype), so no separate normalisation pass follows. Subclasses implement `augment`.
    Randomness comes from generators owned by the stage and reseeded for every batch from the
    batch's index in the stream (`batch_index`, counted from the pipeline's first batch):
    random stream s of batch n is seeded with `derive_seed(seed, s, n)`. Stream 0 (on the host)
    drives the method's choices, which steer host-side work, so drawing them there costs no
    device synchronisation; other streams are the subclass's. A batch's draws therefore depend
    on its index alone, not on how many batches DALI prefetched before it: a pipeline built at
    batch n (a resumed run) augments batch n as the uninterrupted one did. The index counts
    calls, which DALI makes once per batch, in order. On CUDA the work is enqueued on DALI's
    stream; the host never waits for the GPU.
    """

    # False: the stage only draws per-batch regions (`regions`) that DALI's own erase
    # operator zeroes in the normalised images (Cutout); the pipeline never hands it pixels.
    runs_in_torch = True

    def __init__(self, seed: int = 0, crop: int = 224):
        self.seed, self.crop = int(seed), crop
        self.output = None  # a dali_pixmix.augment.pixmix.Normalized format, or None: [0, 1] HWC
        self.batch_index = 0  # stream index of the next batch this stage augments
        self._generators = {}

    def reseeded(self, seed: int, start: int = 0) -> "BatchStage":
        """A fresh stage with the same settings (and bank), its own generators, whose next
        batch is batch `start` of its stream."""
        stage = copy.copy(self)
        stage.seed, stage.batch_index, stage._generators = int(seed), int(start), {}
        return stage

    def for_pipeline(self, seed: int, dtype: str, layout: str, start: int = 0,
                     mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD) -> "BatchStage":
        """`reseeded(seed, start)`, emitting samples normalised with `mean` and `std` (on [0, 1]
        pixels; default ImageNet's) in `dtype` and `layout`; `start` is the stream index of the
        pipeline's first batch."""
        from dali_pixmix.augment.pixmix import Normalized

        dali_dtype(dtype)  # validates
        stage = self.reseeded(seed, start)
        stage.output = Normalized(tuple(mean), tuple(std), check_layout(layout),
                                  getattr(torch, dtype))
        return stage

    def generator(self, device: torch.device, stream: int, index: int) -> torch.Generator:
        """The stage's generator on `device` for random stream `stream`, seeded for batch
        `index`. Reseeding is host-only work, also for a CUDA generator."""
        key = (str(device), stream)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key].manual_seed(derive_seed(self.seed, stream, index))

    def host_generator(self, index: int) -> torch.Generator:
        """Stream 0, on the host, for batch `index`: the method's choices."""
        return self.generator(torch.device("cpu"), 0, index)

    def check_batch(self, batch: torch.Tensor) -> None:
        if batch.ndim != 4 or batch.shape[1:] != (self.crop, self.crop, 3):
            raise ValueError(f"{type(self).__name__} expects uint8 [B, {self.crop}, {self.crop}, "
                             f"3] crops, got {tuple(batch.shape)}; build the stage with "
                             f"crop={batch.shape[1]}")

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """The method on the stream's next batch (`batch_index`, then advanced), uint8
        [B, H, W, 3], on the same device: float32 [B, H, W, 3] in [0, 1], or in the `output`
        format."""
        self.check_batch(batch)
        index, self.batch_index = self.batch_index, self.batch_index + 1
        return self.augment(batch, index)

    def augment(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        """The method on batch `index` of the stream (checked crops)."""
        raise NotImplementedError

    def __call__(self, samples):
        try:
            first = torch.from_dlpack(samples[0])
            with dali_stream(first.device):
                batch = torch.stack([first] + [torch.from_dlpack(s) for s in samples[1:]])
                out = self.apply(batch)  # contiguous
                return [torch.utils.dlpack.to_dlpack(t) for t in out.unbind(0)]
        except Exception as err:
            BatchStage.failure = err  # DALI re-raises it as a pipeline error: `take_failure`
            raise

    failure: Optional[BaseException] = None  # the last error a stage raised inside DALI

    @staticmethod
    def take_failure(dali_error: BaseException) -> Optional[BaseException]:
        """The error a stage raised inside a DALI pipeline when `dali_error` (DALI's own) is
        the report of it, so a loader raises the method's own error instead of searching the
        images; None for any other DALI failure. The record is forgotten either way (DALI may
        have run later batches, or another pipeline, since it was made)."""
        failure, BatchStage.failure = BatchStage.failure, None
        if failure is None or f"{type(failure).__name__}: {failure}" not in str(dali_error):
            return None
        return failure


class PixMixStage(BatchStage):
    """PixMix (`dali_pixmix.augment.pixmix.pixmix`) with one mixing picture per sample drawn
    from `bank` (a random `crop` window each, random stream 1 on the bank's device).

    `partner_aug_prob` is the probability that a round's partner is an augmented copy of the
    image (PixMix: 0.5; 1 and 0 are the paper's Table 5 ablations). At 1 no mixing picture is
    ever used, and `bank` may be None. `strategy` and `cuda_graph` choose how `pixmix` runs
    (see there); `cuda_graph` applies to batches on a GPU only.
    """

    def __init__(self, bank: Optional[MixingBank], k: int = 4, beta: float = 4.0,
                 severity: float = 1, all_ops: bool = True, seed: int = 0, crop: int = 224,
                 partner_aug_prob: float = 0.5, strategy: str = "auto",
                 cuda_graph: bool = False):
        super().__init__(seed, crop)
        from dali_pixmix.augment.pixmix import check_strategy

        check_strategy(strategy, cuda_graph)
        self.strategy, self.cuda_graph = strategy, cuda_graph
        if bank is None and partner_aug_prob < 1:
            raise ValueError("PixMix needs a mixing bank unless every partner is an augmented "
                             "copy (partner_aug_prob=1)")
        if bank is not None and crop > bank.size:
            raise ValueError(f"PixMix crop {crop} is larger than the mixing bank's {bank.size} px "
                             "pictures; rebuild the bank with a larger --size")
        self.bank, self.k, self.beta, self.severity = bank, k, beta, severity
        self.all_ops, self.partner_aug_prob = all_ops, partner_aug_prob

    def augment(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        from dali_pixmix.augment.pixmix import pixmix

        if self.bank is None:
            mixing = batch  # never read: every partner is an augmented copy
        else:
            mixing = self.bank.sample(batch.shape[0], self.crop,
                                      self.generator(self.bank.device, 1, index),
                                      device=batch.device)
        return pixmix(batch, mixing, k=self.k, beta=self.beta, severity=self.severity,
                      all_ops=self.all_ops, generator=self.host_generator(index),
                      output=self.output, partner_aug_prob=self.partner_aug_prob,
                      strategy=self.strategy, cuda_graph=self.cuda_graph and batch.is_cuda)


class AugMixStage(BatchStage):
    """AugMix (`dali_pixmix.augment.augmix.augmix`); ImageNet settings by default."""

    def __init__(self, width: int = 3, depth: int = -1, severity: float = 1, alpha: float = 1.0,
                 all_ops: bool = True, seed: int = 0, crop: int = 224):
        super().__init__(seed, crop)
        self.width, self.depth, self.severity = width, depth, severity
        self.alpha, self.all_ops = alpha, all_ops

    def augment(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        from dali_pixmix.augment.augmix import augmix

        return augmix(batch, width=self.width, depth=self.depth, severity=self.severity,
                      alpha=self.alpha, all_ops=self.all_ops,
                      generator=self.host_generator(index), output=self.output)


class CutoutStage(BatchStage):
    """Cutout (`dali_pixmix.augment.cutout`): one `size` x `size` square per image, zero after
    normalisation. In the pipeline the stage only draws the squares (`regions`) and DALI's
    `fn.erase` zeroes them, multithreaded on the pipeline's device; `apply` runs the same
    method in torch (`cutout`) on a batch of crops."""

    runs_in_torch = False

    def __init__(self, size: int, seed: int = 0, crop: int = 224):
        super().__init__(seed, crop)
        if not 1 <= size:
            raise ValueError(f"Cutout size must be >= 1 pixel, got {size}")
        self.size = size

    def augment(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        from dali_pixmix.augment.cutout import cutout

        return cutout(batch, self.size, self.host_generator(index), output=self.output)

    def regions(self, labels) -> tuple:
        """DALI's python_function, called once per batch with its labels (one array per
        image): `fn.erase` anchors and shapes of the squares of the stream's next batch
        (`batch_index`, then advanced), the boxes `cutout` draws for that batch."""
        from dali_pixmix.augment.cutout import cutout_boxes, erase_regions

        index, self.batch_index = self.batch_index, self.batch_index + 1
        return erase_regions(cutout_boxes(len(labels), self.crop, self.crop, self.size,
                                          self.host_generator(index)))


class dali_stream:
    """Context: on CUDA, make DALI's current stream torch's current stream; no-op on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self._ctx = None

    def __enter__(self):
        if self.device.type == "cuda":
            from nvidia.dali import python_function_plugin

            stream = torch.cuda.ExternalStream(python_function_plugin.current_dali_stream(),
                                               device=self.device)
            self._ctx = torch.cuda.stream(stream)
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False
