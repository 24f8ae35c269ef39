#!/usr/bin/env python3
"""CIFAR training data path with PixMix: ours (DALI) vs the reference's (PIL in a DataLoader).

Both produce normalised 32 px training batches with the paper's CIFAR PixMix (k=4, beta=3,
severity 3, all ops) from the same pictures:
 (a) ours: the train split in memory fed to the DALI pipeline (`make_array_train_loader`:
     RandomCrop(32, padding=4) + flip in DALI, then the batch-level PixMix stage, mixing
     pictures drawn from a bank decoded once at 36 px), DALI CPU threads = --workers;
 (b) the reference's (cifar.py): a torchvision CIFAR10-style dataset (uint8 pictures in memory,
     a PIL image per picture, RandomHorizontalFlip + RandomCrop(32, padding=4)), a mixing
     picture read from its file per sample (Resize(36) + RandomCrop(32)), PixMix per picture
     with PIL ops (`augment.pil_oracle`), ToTensor + Normalize(0.5, 0.5), in a torch DataLoader
     with --workers worker processes.
Images/s of each, after a warm-up, in interleaved rounds (a, b, a, b, ...); medians and a/b
(the goal: >= 3 on the same CPU cores). With --train (default on CUDA), also WRN training
steps fed by (a) against the same steps on synthetic in-memory batches (goal on a GPU: >= 0.9).
Without --data a CIFAR-like set is generated (and fractals as the mixing set), cached in
--cache-dir. On CUDA, (a) runs its pipeline and PixMix on the GPU.
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

from dali_pixmix.check.throughput import (  # noqa: E402
    DALI_DRAIN,
    dataloader_drain,
    endless,
    interleaved_medians,
    interleaved_steps,
    make_step,
    synthetic_batches,
)
from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.data.cifar import CIFAR_MEAN, CIFAR_STD, read_cifar  # noqa: E402
from dali_pixmix.data.images import scan_images  # noqa: E402
from dali_pixmix.distributed import DistInfo, pick_device  # noqa: E402
from dali_pixmix.evaluation.synthetic_cifar import synthetic_split  # noqa: E402
from dali_pixmix.mixing.bank import MixingBank  # noqa: E402
from dali_pixmix.mixing.fractals import make_fractals  # noqa: E402
from dali_pixmix.pipelines.loaders import make_array_train_loader  # noqa: E402
from dali_pixmix.pipelines.stage import PixMixStage  # noqa: E402

PIXMIX = dict(k=4, beta=3.0, severity=3, all_ops=True)  # the paper's CIFAR settings
BANK_SIZE, CROP, PADDING = 36, 32, 4


def parse_args(argv=None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", help="CIFAR-10 root in either format (default: generated)")
    p.add_argument("--images", type=int, default=2000, help="generated training pictures")
    p.add_argument("--mixing", type=int, default=32, help="generated fractal mixing pictures")
    p.add_argument("--mixing-size", type=int, default=256,
                   help="side of the generated mixing pictures (files the reference decodes)")
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "dali_pixmix_bench"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--measure", type=int, default=1024,
                   help="images timed per configuration and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds of pause before each timed window (background refills end)")
    p.add_argument("--workers", type=int, default=cores,
                   help="reference DataLoader workers = our DALI CPU threads = our torch threads")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=None,
                   help="also time training steps fed by (a) vs synthetic batches (default: "
                        "on CUDA only)")
    p.add_argument("--arch", default="wrn40_4", help="model of --train")
    p.add_argument("--steps", type=int, default=30, help="--train: timed steps per round")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def prepare_data(args):
    """(uint8 [N, 32, 32, 3] pictures, labels, folder of mixing pictures)."""
    cache = Path(args.cache_dir)
    if args.data:
        split = read_cifar(args.data, "cifar10", "train")
        images, labels = split.images, split.labels
    else:
        images, labels = synthetic_split(10, max(1, args.images // 10), 0, "train")
    mixing = cache / f"cifar_mixing_{args.mixing}_{args.mixing_size}"
    if len(list(mixing.glob("*.png"))) < args.mixing:
        make_fractals(mixing, n=args.mixing, size=args.mixing_size, seed=0, progress=True)
    return images, labels, mixing


# --------------------------------------------------------------------------- (b) reference
class ReferenceCifar(torch.utils.data.Dataset):
    """torchvision's `CIFAR10.__getitem__` over pictures in memory (its class itself refuses
    generated folders, by checksum): a PIL image per picture, then `transform`."""

    def __init__(self, images, labels, transform):
        self.data, self.targets, self.transform = images, labels, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), int(self.targets[index])


class ReferencePixMix(torch.utils.data.Dataset):
    """The reference's `PixMixDataset` (cifar.py): a training picture, a random mixing
    picture from its file (ImageFolder: PIL open, Resize(36), RandomCrop(32)), per-image PixMix
    with PIL ops, normalised; endless (index modulo the set: no epoch restarts the workers)."""

    def __init__(self, dataset, mixing_files):
        from torchvision import transforms

        self.dataset, self.mixing_files = dataset, mixing_files
        self.mixing_transform = transforms.Compose([transforms.Resize(BANK_SIZE),
                                                    transforms.RandomCrop(CROP)])

    def __len__(self):
        return 10 ** 9

    def __getitem__(self, index):
        from PIL import Image

        from dali_pixmix.augment.pil_oracle import pixmix_pil

        rng = np.random.default_rng(index)
        image, label = self.dataset[index % len(self.dataset)]
        path = self.mixing_files[rng.integers(len(self.mixing_files))]
        mixing = self.mixing_transform(Image.open(path).convert("RGB"))
        mixed = pixmix_pil(image, mixing, rng, **PIXMIX)
        normalised = (mixed - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD)
        return torch.from_numpy(normalised.transpose(2, 0, 1).copy()), label


def reference_batches(args, images, labels, mixing):
    from torchvision import transforms

    train = transforms.Compose([transforms.RandomHorizontalFlip(),
                                transforms.RandomCrop(CROP, padding=PADDING)])
    dataset = ReferencePixMix(ReferenceCifar(images, labels, train), scan_images(mixing))
    return iter(torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                            num_workers=args.workers, shuffle=False))


# --------------------------------------------------------------------------- (a) ours
def our_loader(args, images, labels, bank, device, channels_last=False):
    stage = PixMixStage(bank, crop=CROP, **PIXMIX)
    return make_array_train_loader(images, labels, batch_size=args.batch_size,
                                   dist=DistInfo(device=device), stage=stage,
                                   num_threads=args.workers, channels_last=channels_last)


def measure_data_paths(args, images, labels, mixing, bank, device) -> dict:
    """Median images/s of (a) and (b) over interleaved rounds after a warm-up."""
    sources = {"a_dali_pixmix": (endless(our_loader(args, images, labels, bank, device)),
                                 DALI_DRAIN),
               "b_reference": (reference_batches(args, images, labels, mixing),
                               dataloader_drain(args.workers))}
    return interleaved_medians(sources, args.rounds, args.measure, device, args.settle)


def measure_training(args, images, labels, bank, device) -> dict:
    """Best images/s of `--arch` training steps fed by (a) and by synthetic batches, over
    interleaved rounds after a warm-up (`interleaved_steps`)."""
    from dali_pixmix.config import Config
    from dali_pixmix.models import build_model
    from dali_pixmix.training.setup import resolve_amp

    channels_last = device.type == "cuda"
    model = build_model(args.arch, 10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    step = make_step(model, optimizer, resolve_amp(Config(), device), device)  # bf16
    sources = {"synthetic": synthetic_batches(args.batch_size, CROP, 10, device, channels_last),
               "dali_pixmix": endless(our_loader(args, images, labels, bank, device,
                                                 channels_last))}
    best = interleaved_steps(step, sources, args.rounds, args.steps, 3, device, args.settle)
    return {f"train_{name}": rate for name, rate in best.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.workers)  # our stage's torch threads: the same cores as (b)'s
    device = pick_device(0, args.device)
    images, labels, mixing = prepare_data(args)
    bank = MixingBank.from_folder(mixing, size=BANK_SIZE, device=device)
    results = measure_data_paths(args, images, labels, mixing, bank, device)
    results["ratio_a_over_b"] = results["a_dali_pixmix"] / results["b_reference"]
    if args.train if args.train is not None else device.type == "cuda":
        results.update(measure_training(args, images, labels, bank, device))
        results["ratio_train"] = results["train_dali_pixmix"] / results["train_synthetic"]
    results.update(device=str(device), cores=os.cpu_count(), workers=args.workers,
                   batch_size=args.batch_size, rounds=args.rounds, images_per_round=args.measure,
                   load_average=os.getloadavg()[0])
    report(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(args, results: dict) -> None:
    print(f"device {results['device']}, {results['cores']} cores, batch {args.batch_size}, "
          f"median of {args.rounds} interleaved rounds of {args.measure} images, load average "
          f"{results['load_average']:.1f}")
    print(f"(a) DALI + PixMix stage, {args.workers} DALI threads: "
          f"{results['a_dali_pixmix']:9.1f} images/s")
    print(f"(b) reference PIL PixMix, {args.workers} workers:     "
          f"{results['b_reference']:9.1f} images/s")
    print(f"a/b = {results['ratio_a_over_b']:.2f}")
    if "ratio_train" in results:
        print(f"{args.arch} training: synthetic {results['train_synthetic']:.1f} images/s, "
              f"DALI + PixMix {results['train_dali_pixmix']:.1f} images/s, ratio "
              f"{results['ratio_train']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
