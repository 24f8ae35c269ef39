#!/usr/bin/env python3
"""Training data throughput of each augmentation method: DALI baseline (a), DALI + method (b),
PIL reference of PixMix (c).

All read the same generated JPEGs (~300-400 px, made once into a cache folder) and produce
normalised 224 px training batches: (a) the DALI pipeline (decode + random-resized-crop + flip,
the `baseline` method), (b) the same pipeline with a method's data path as training runs it
(`--method`, default pixmix: its per-image stage or DALI's AutoAugment in the pipeline, and the
label mixing of mixup / cutmix on the loader's device), (c) for PixMix, the reference-style
torchvision DataLoader (PIL decode, RandomResizedCrop, flip, per-image PIL PixMix drawing a
mixing picture from its file) with one worker per core. Prints images/s and the ratios b/a
(the cost of the method inside DALI) and, for PixMix, b/c (speed-up over the reference path).

On CUDA, (a) and (b) decode with nvJPEG and run PixMix on the GPU; timings synchronise the
device. Defaults finish in about two minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dali_pixmix.augment.methods import METHOD_NAMES, method  # noqa: E402
from dali_pixmix.check.throughput import (  # noqa: E402
    DALI_DRAIN,
    benchmark_data,
    dataloader_drain,
    interleaved_medians,
    method_batches,
)
from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.data.images import class_names, scan_images  # noqa: E402
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from dali_pixmix.distributed import pick_device  # noqa: E402
from dali_pixmix.mixing.bank import MixingBank  # noqa: E402

CROP = 224


def parse_args(argv=None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=512, help="generated training JPEGs")
    p.add_argument("--mixing", type=int, default=32, help="generated fractal mixing pictures")
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "dali_pixmix_bench"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--measure", type=int, default=256,
                   help="images timed per configuration and round")
    p.add_argument("--rounds", type=int, default=4,
                   help="interleaved rounds (a, b, c, a, ...); the median is reported")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds of pause before each timed window (background refills end)")
    p.add_argument("--num-threads", type=int, default=cores, help="DALI CPU threads")
    p.add_argument("--workers", type=int, default=cores, help="reference DataLoader workers")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--method", nargs="+", default=["pixmix"], choices=METHOD_NAMES + ("all",),
                   metavar="METHOD", help="method(s) timed as (b), or all: "
                   + ", ".join(METHOD_NAMES))
    p.add_argument("--skip-reference", action="store_true",
                   help="do not time (c), the PIL reference of PixMix")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def dali_batches(args, train_root, device, bank, name: str, classes: int):
    """Batches of method `name`'s training data path: its pipeline, then its label mixing."""
    return method_batches(train_root, name, batch_size=args.batch_size, device=device,
                          bank=bank, classes=classes, num_threads=args.num_threads, crop=CROP)


class ReferenceDataset(torch.utils.data.Dataset):
    """The reference recipe per image: PIL decode, RandomResizedCrop, flip, PIL PixMix."""

    def __init__(self, files, mixing_files, length: int):
        from torchvision import transforms

        self.files, self.mixing_files, self.length = files, mixing_files, length
        self.base = transforms.Compose([transforms.RandomResizedCrop(CROP),
                                        transforms.RandomHorizontalFlip()])
        self.mix_prep = transforms.Compose([transforms.Resize(256), transforms.RandomCrop(CROP)])

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        from PIL import Image

        from dali_pixmix.augment.pil_oracle import pixmix_pil

        rng = np.random.default_rng(index)
        image = self.base(Image.open(self.files[index % len(self.files)]).convert("RGB"))
        mix = self.mix_prep(Image.open(self.mixing_files[rng.integers(len(self.mixing_files))])
                            .convert("RGB"))
        mixed = pixmix_pil(image, mix, rng, k=4, beta=4.0, severity=1, all_ops=True)
        normalised = (mixed - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
        return torch.from_numpy(normalised.transpose(2, 0, 1).copy()), 0


def reference_batches(args, train_root, mixing):
    files, mixing_files = scan_images(train_root), scan_images(mixing)
    loader = torch.utils.data.DataLoader(ReferenceDataset(files, mixing_files, 10**9),
                                         batch_size=args.batch_size, num_workers=args.workers,
                                         shuffle=False)
    return iter(loader)


def chosen_methods(args) -> list:
    names = METHOD_NAMES if "all" in args.method else args.method
    return [n for n in dict.fromkeys(names) if n != "baseline"]  # (a) is the baseline


def build_sources(args, train_root, mixing, device, methods) -> dict:
    """{name: (batches, untimed batches to drain)} of (a), each (b) and (c)."""
    bank = MixingBank.from_folder(mixing, size=256, device=device)
    classes = len(class_names(train_root))  # the loaders' own rule (no hidden folders)
    sources = {"a_dali": (dali_batches(args, train_root, device, bank, "baseline", classes),
                          DALI_DRAIN)}
    for name in methods:
        sources[f"b_{name}"] = (dali_batches(args, train_root, device, bank, name, classes),
                                DALI_DRAIN)
    if "pixmix" in methods and not args.skip_reference:
        sources["c_reference"] = (reference_batches(args, train_root, mixing),
                                  dataloader_drain(args.workers))
    return sources


def report(args, results: dict, methods, device) -> str:
    """Print one line per configuration; add the ratios to `results`; the summary line."""
    labels = {"a_dali": "(a) DALI baseline (crop + flip)",
              "c_reference": f"(c) PIL reference PixMix, {args.workers} workers",
              **{f"b_{n}": f"(b) DALI + {method(n).title}" for n in methods}}
    for name, rate in list(results.items()):
        print(f"{labels[name]:<52}: {rate:9.1f} images/s")
    parts = []
    for name in methods:
        results[f"ratio_{name}_over_a"] = results[f"b_{name}"] / results["a_dali"]
        parts.append(f"{name}/a = {results[f'ratio_{name}_over_a']:.2f}")
    if "c_reference" in results:
        results["ratio_pixmix_over_c"] = results["b_pixmix"] / results["c_reference"]
        parts.append(f"pixmix/c = {results['ratio_pixmix_over_c']:.2f}")
    return ", ".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(0, args.device)
    train_root, mixing = benchmark_data(args.cache_dir, args.images, args.mixing)
    methods = chosen_methods(args)
    sources = build_sources(args, train_root, mixing, device, methods)
    # median images/s per configuration over interleaved rounds (a, b..., c, a, ...)
    results = interleaved_medians(sources, args.rounds, args.measure, device, args.settle)
    summary = report(args, results, methods, device)
    results.update(device=str(device), batch_size=args.batch_size, rounds=args.rounds,
                   settle_s=args.settle,
                   images_per_round=args.measure, num_threads=args.num_threads,
                   workers=args.workers, cores=os.cpu_count())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"{summary} on {device} (batch {args.batch_size}, median of {args.rounds} "
          f"interleaved rounds of {args.measure} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
