"""The torch side of the DALI training pipeline: the batch-level PixMix stage.

`PixMixStage` is handed to DALI as a `dl_tensor_python_function`; it views the batch as a torch
tensor (DLPack, zero copy, same device) and runs `dali_pixmix.augment.pixmix` on it. On CUDA its
work is enqueued on DALI's current stream (`dali_stream`).
"""
from __future__ import annotations

import torch

from dali_pixmix.data.graphs import IMAGENET_MEAN, IMAGENET_STD, _check_layout, _dali_dtype
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.seeds import derive_seed


class PixMixStage:
    """The batch-level PixMix step of a DALI pipeline (a `dl_tensor_python_function`).

    Called with one DLPack capsule per sample (uint8 HWC crops on the pipeline's device), it views
    them as a torch batch, draws one mixing picture per sample from `bank` (a random `crop`
    window each) and applies `dali_pixmix.pixmix.pixmix`. Returns float32 [0,1] HWC samples, or,
    for a stage made by `for_pipeline`, the pipeline's final normalised samples (its layout and
    dtype), so no separate normalisation pass follows.
    Randomness comes from generators owned by the stage and reseeded for every batch from the
    batch's index in the stream (`batch_index`, counted from `start`): PixMix's choices on the
    host (they steer host-side batching, so drawing them there costs no device synchronisation)
    from `derive_seed(seed, 0, index)`, the bank draws on the bank's device from
    `derive_seed(seed, 1, index)`. A batch's draws therefore depend on its index alone, not on
    how many batches DALI prefetched before it: a pipeline built at batch n (a resumed run)
    mixes batch n as the uninterrupted one did. The index counts calls, which DALI makes once
    per batch, in order. On CUDA the work is enqueued on DALI's stream; the host never waits
    for the GPU.
    """

    def __init__(self, bank: MixingBank, k: int = 4, beta: float = 4.0, severity: float = 1,
                 all_ops: bool = True, seed: int = 0, crop: int = 224):
        if crop > bank.size:
            raise ValueError(f"PixMix crop {crop} is larger than the mixing bank's {bank.size} px "
                             "pictures; rebuild the bank with a larger --size")
        self.bank, self.k, self.beta, self.severity = bank, k, beta, severity
        self.all_ops, self.seed, self.crop = all_ops, int(seed), crop
        self.output = None  # a dali_pixmix.pixmix.Normalized format, or None: [0, 1] HWC
        self.batch_index = 0  # stream index of the next batch this stage mixes
        self._generators = {}

    def reseeded(self, seed: int, start: int = 0) -> "PixMixStage":
        """A fresh stage with the same bank and settings, its own generators, whose next batch
        is batch `start` of its stream."""
        stage = PixMixStage(self.bank, self.k, self.beta, self.severity, self.all_ops, seed,
                            self.crop)
        stage.output, stage.batch_index = self.output, int(start)
        return stage

    def for_pipeline(self, seed: int, dtype: str, layout: str) -> "PixMixStage":
        """`reseeded(seed)`, emitting ImageNet-normalised samples in `dtype` and `layout`
        (the pipeline sets `batch_index` to its first batch)."""
        from dali_pixmix.augment.pixmix import Normalized

        _dali_dtype(dtype)  # validates
        stage = self.reseeded(seed)
        stage.output = Normalized(IMAGENET_MEAN, IMAGENET_STD, _check_layout(layout),
                                  getattr(torch, dtype))
        return stage

    def generator(self, device: torch.device, stream: int, index: int) -> torch.Generator:
        """The stage's generator on `device`, seeded for batch `index`; `stream` 0 drives
        PixMix, 1 the bank draws. Reseeding is host-only work, also for a CUDA generator."""
        key = (str(device), stream)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key].manual_seed(derive_seed(self.seed, stream, index))

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """PixMix a uint8 [B, H, W, 3] batch, on the same device: float32 [B, H, W, 3] in
        [0, 1], or in the `output` format; the batch is batch `batch_index` of the stream."""
        from dali_pixmix.augment.pixmix import pixmix

        if batch.ndim != 4 or batch.shape[1:] != (self.crop, self.crop, 3):
            raise ValueError(f"PixMix stage expects uint8 [B, {self.crop}, {self.crop}, 3] crops, "
                             f"got {tuple(batch.shape)}; build the stage with crop={batch.shape[1]}")
        index, self.batch_index = self.batch_index, self.batch_index + 1
        bank_gen = self.generator(self.bank.device, 1, index)
        mixing = self.bank.sample(batch.shape[0], self.crop, bank_gen, device=batch.device)
        return pixmix(batch, mixing, k=self.k, beta=self.beta, severity=self.severity,
                      all_ops=self.all_ops, output=self.output,
                      generator=self.generator(torch.device("cpu"), 0, index))

    def __call__(self, samples):
        first = torch.from_dlpack(samples[0])
        with dali_stream(first.device):
            batch = torch.stack([first] + [torch.from_dlpack(s) for s in samples[1:]])
            mixed = self.apply(batch)  # contiguous
            return [torch.utils.dlpack.to_dlpack(t) for t in mixed.unbind(0)]


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
