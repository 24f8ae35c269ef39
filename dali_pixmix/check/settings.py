"""Sizes, step counts and time limits of a self-check, per machine kind and mode.

Three presets: a CUDA machine (the real sizes: 224 px, batch 256, ResNet-50), the same with
`--quick` (fewer images and steps), and a CPU-only machine (tiny sizes: the point there is that
the code runs, not the speed). Time limits are per check; the run as a whole also keeps to
`budget_s`, shortening or skipping what would not fit.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

# Seconds per check on a CUDA machine (default mode); --quick and CPU scale them below.
CUDA_LIMITS = {
    "environment": 60, "decode_libraries": 30, "nvjpeg_decode": 90, "train_pipeline": 120,
    "stage_no_sync": 90, "amp_channels_last": 120, "batch_lifetime": 150, "ddp_nccl": 150,
    "video_decode": 90, "eval_gpu_vs_cpu": 120, "pixmix_stage": 90, "train_decode": 90,
    "pipeline_pixmix": 150, "pipeline_cuda_graph": 120, "train_step": 180, "eval_infer": 120,
    "imagenet_p_video": 120,
}


@dataclass(frozen=True)
class Settings:
    device: str                    # "cuda" or "cpu"
    quick: bool
    workdir: Path                  # generated data, logs, results of the children
    data: Optional[str] = None     # a class-folder tree to read instead of generated JPEGs
    mixing: Optional[str] = None   # a mixing-set folder or .npy bank instead of fractals
    threads: int = 4               # DALI CPU threads
    torch_threads: Optional[int] = None  # torch intra-op threads in each check (None: default)
    crop: int = 224
    batch: int = 256               # pipeline and throughput batch
    check_batch: int = 32          # functional checks' batch
    arch: str = "resnet50"
    ddp_arch: str = "resnet18"     # a small model: the DDP check is about NCCL, not speed
    classes: int = 8
    train_per_class: int = 64
    val_per_class: int = 8         # 64 evaluation pictures with 8 classes
    image_size: tuple = (300, 400)
    mixing_count: int = 32
    bank_size: int = 256
    amp_crop: int = 224
    amp_batch: int = 32
    amp_steps: int = 20
    videos: int = 16
    video_frames: int = 31
    video_size: int = 224
    stage_calls: int = 20
    pipeline_batches: int = 20
    train_steps: int = 20
    train_warmup: int = 8
    rounds: int = 2
    eval_images: int = 512
    budget_s: float = 360.0
    limits: Dict[str, float] = field(default_factory=lambda: dict(CUDA_LIMITS))
    pixmix_strategy: str = "auto"  # the PixMix stage of the checks and the pipeline/training
    pixmix_cuda_graph: bool = False  # measurements (pixmix.strategy / pixmix.cuda_graph)

    @property
    def on_cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def eval_resize(self) -> int:
        """Shorter side before the evaluation crop: 256 for 224 (ImageNet), in proportion
        otherwise."""
        return round(self.crop * 256 / 224)

    def limit(self, name: str) -> float:
        return self.limits.get(name, 120.0)

    def pixmix_stage(self, bank):
        """The PixMix stage the checks build: this machine's crop, the chosen execution."""
        from dali_pixmix.pipelines.stage import PixMixStage

        return PixMixStage(bank, crop=self.crop, strategy=self.pixmix_strategy,
                           cuda_graph=self.pixmix_cuda_graph and self.on_cuda)


def for_machine(cuda: bool, quick: bool, workdir: Path, **user) -> Settings:
    """The preset for this machine; `user` holds data, mixing, threads, budget_s and the
    PixMix execution (None = preset)."""
    user = {k: v for k, v in user.items() if v is not None}
    threads = user.pop("threads", None) or max(1, min(8, os.cpu_count() or 1))
    base = Settings(device="cuda" if cuda else "cpu", quick=quick, workdir=workdir,
                    threads=threads)
    if not cuda:
        base = dataclasses.replace(
            base, crop=48, batch=8, check_batch=8, arch="mobilenet_v3_small",
            ddp_arch="mobilenet_v3_small", classes=4, train_per_class=4, val_per_class=2,
            image_size=(48, 80), mixing_count=6, bank_size=64, amp_crop=32, amp_batch=8,
            amp_steps=6, videos=2, video_frames=8, video_size=48, stage_calls=2,
            pipeline_batches=2, train_steps=2, train_warmup=1, rounds=1, eval_images=16,
            budget_s=300.0, torch_threads=1,
            limits={k: 2 * v for k, v in CUDA_LIMITS.items()})
    elif quick:
        base = dataclasses.replace(
            base, train_per_class=32, mixing_count=16, videos=8, stage_calls=10,
            pipeline_batches=8, train_steps=8, train_warmup=5, rounds=1, eval_images=256,
            budget_s=110.0, limits={k: 0.6 * v for k, v in CUDA_LIMITS.items()})
    return dataclasses.replace(base, **user)
