#!/usr/bin/env python3
"""ImageNet-P evaluation throughput (frames/s): our video path vs a PyAV + DataLoader baseline.

Three measurements on the same videos and model, in one run:
  model only   synthetic frames already on the device (the ceiling: no decoding at all)
  ours         dali_pixmix.evaluation.video.VideoReader (DALI/NVDEC on GPU, threaded PyAV on CPU),
               whole videos grouped to --batch-size frames, normalised on the device
  baseline     a torch DataLoader whose workers decode with PyAV and normalise on the CPU with
               torchvision, one video per batch (the usual reference-code structure)
Small defaults finish in well under 2 minutes on 2 CPU cores; on a GPU node try
`--size 224 --videos 256 --arch resnet50 --batch-size 512 --workers 8`.
Without --root, H.264 test videos are generated into a temporary folder (needs libx264 in PyAV).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.check.fixtures import write_h264_videos  # noqa: E402
from dali_pixmix.check.throughput import sync, time_model_only, time_video_reader  # noqa: E402
from dali_pixmix.classes import imagenet_wnids  # noqa: E402
from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from dali_pixmix.distributed import pick_device  # noqa: E402
from dali_pixmix.evaluation.video import decode_pyav, list_videos  # noqa: E402
from dali_pixmix.models import build_model  # noqa: E402
from dali_pixmix.precision import autocast, eval_amp_dtype  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--root", default=None,
                   help="a perturbation folder <wnid>/*.mp4 (default: generate videos)")
    p.add_argument("--videos", type=int, default=12, help="videos to generate")
    p.add_argument("--frames", type=int, default=31)
    p.add_argument("--size", type=int, default=96, help="frame size of generated videos")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch-size", type=int, default=124, help="frames per forward pass (ours)")
    p.add_argument("--workers", type=int, default=2,
                   help="decode threads (ours) / DataLoader workers (baseline)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    return p.parse_args(argv)


class PyAVVideos(torch.utils.data.Dataset):
    """Baseline dataset: decode one video with PyAV, normalise each frame with torchvision."""

    def __init__(self, entries):
        self.entries = entries

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        import torchvision.transforms.functional as TF
        frames = decode_pyav(self.entries[i].path)
        return torch.stack([TF.normalize(TF.to_tensor(f), IMAGENET_MEAN, IMAGENET_STD)
                            for f in frames])


@torch.no_grad()
def time_baseline(model, entries, device, workers) -> float:
    loader = torch.utils.data.DataLoader(PyAVVideos(entries), batch_size=None, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    start, done = time.perf_counter(), 0
    for video in loader:
        with autocast(device, eval_amp_dtype(device)):
            model(video.to(device, non_blocking=True)).float().topk(5, dim=1).indices.cpu()
        done += video.shape[0]
    sync(device)
    return done / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(0, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.root) if args.root else Path(tmp)
        if not args.root:
            write_h264_videos(folder, args.videos, args.frames, args.size, imagenet_wnids()[:10])
        entries = list_videos(folder, imagenet_wnids())
        size = decode_pyav(entries[0].path).shape[1]
        model = build_model(args.arch, 1000).to(device).eval()
        time_model_only(model, device, args.batch_size, size, args.batch_size)        # warm-up
        total = len(entries) * args.frames
        ceiling = time_model_only(model, device, total, size, args.batch_size)
        ours = time_video_reader(model, entries, args.frames, device, args.batch_size,
                                 args.workers)
        base = time_baseline(model, entries, device, args.workers)
    print(f"device {device}, {args.arch}, {len(entries)} videos x {args.frames} frames of {size}px")
    print(f"model only (synthetic) {ceiling:9.1f} frames/s")
    print(f"ours                   {ours:9.1f} frames/s  ({ours / ceiling:.2f} of model-only)")
    print(f"PyAV + DataLoader      {base:9.1f} frames/s  ({base / ceiling:.2f} of model-only)")
    print(f"ours / baseline: {ours / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
