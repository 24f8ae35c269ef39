#!/usr/bin/env python3
"""Each augmentation method's training data path against torchvision's, side by side.

For every `augment.method` that torchvision has an equivalent of (for PixMix: the published
reference code's `PixMixDataset`, read from a checkout given with --pixmix-reference and never
downloaded; without it the PixMix rows are skipped with a note), both sides read the same
generated JPEGs (~300-400 px, made once into --cache-dir) and produce the same output:
normalised float32 [B, 3, 224, 224] batches with int64 labels (soft labels for mixup / cutmix).

- ours: the DALI training loader with the method, as training builds it (decode with
  random-resized-crop, flip, the method's stage or DALI's AutoAugment, normalisation; mixup /
  cutmix on the loader's device), --workers DALI threads;
- torchvision: `ImageFolder` + `transforms.v2` + `DataLoader` with --workers worker processes
  (torchvision's classification recipe: PIL decode, RandomResizedCrop, flip, the method,
  PILToTensor, ToDtype, Normalize; mixup / cutmix in the collate function).

One method at a time (only its two sides alive): warm-up, then --rounds interleaved rounds
(ours, torchvision, ours, ...), medians. Prints `method=<m> ours=<img/s> torchvision=<img/s>
ratio=<r>` per method, a markdown table, and every difference between the two sides'
augmentations. The defaults (three methods) take about two minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
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
    benchmark_data,
    dataloader_drain,
    endless,
    interleaved_medians,
    method_batches,
    method_config,
)
from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.config import Config  # noqa: E402
from dali_pixmix.data.images import class_names  # noqa: E402
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from dali_pixmix.mixing.bank import MixingBank  # noqa: E402
from dali_pixmix.training.methods import cutout_size  # noqa: E402

CROP = 224
PIXMIX_ROWS = ("pixmix", "pixmix_cutmix")  # compared with the published reference code
# What differs between the two sides, per method (ImageNet settings: `Config()` defaults).
DIFFERENCES = {
    "baseline": "none in the recipe (RandomResizedCrop 224, area 0.08-1, aspect 3/4-4/3, "
                "flip p=0.5, ImageNet normalisation); ours decodes only the crop window and "
                "resizes with DALI's antialiased linear filter, torchvision decodes the whole "
                "picture and resizes with PIL's bilinear filter",
    "cutout": "torchvision's RandomErasing(p=1, value 0 after normalisation) with the same "
              "112 px square always lies inside the image; ours (DeVries & Taylor) centres the "
              "square uniformly over the pixels and clips it at the border",
    "mixup": "the same law (lambda ~ Beta(0.2, 0.2), soft labels); torchvision's v2.MixUp "
             "pairs each image with its neighbour in the batch (a roll by one) and runs in the "
             "DataLoader workers (collate function, torchvision's recipe); ours pairs it with a "
             "random permutation, on the loader's device in the main process",
    "cutmix": "the same law (lambda ~ Beta(1, 1), one box per batch, soft labels by area); "
              "torchvision's v2.CutMix pairs neighbours (roll by one) in the collate function, "
              "ours a random permutation in the main process",
    "autoaugment": "different sub-policies: ours is the TensorFlow release's ImageNet policy "
                   "(policy_v0, which DALI ships: 0.33 rotate / shear / translate steps per "
                   "image), torchvision's AutoAugmentPolicy.IMAGENET the paper appendix's "
                   "(0.17 such steps per image, more posterize and equalize); both sample the "
                   "nearest pixel with fill 128; each library's own ops and magnitude scales",
    "augmix": "same structure (width 3, depth 1-3, alpha 1, the 13 ops, bilinear); severity: "
              "ours 1 (levels U(0.1, 1) of 10 on the reference's scale), torchvision 2 (bin 0 "
              "or 1 of its 10 magnitude bins over [0, max], the closest it offers); "
              "torchvision runs the ops in torch on one image at a time",
    "pixmix": "the reference's PixMixDataset itself (k=4, beta=4, severity 1, all ops, per "
              "image in PIL) reading one mixing picture file per sample (Resize 256 + "
              "RandomCrop 224); ours draws the same pictures from an in-memory bank (256 px) "
              "and runs PixMix batched",
    "pixmix_cutmix": "as pixmix, then CutMix (alpha 1): torchvision's v2.CutMix in the "
                     "collate function, ours in the main process",
}
METHODS = tuple(DIFFERENCES)


def parse_args(argv=None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["baseline", "cutout", "autoaugment"],
                   choices=METHODS + ("all",), metavar="METHOD",
                   help="methods to time, or all: " + ", ".join(METHODS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds (ours, torchvision, ...); the median is reported")
    p.add_argument("--workers", type=int, default=cores,
                   help="DALI threads (ours) and DataLoader worker processes (torchvision)")
    p.add_argument("--measure", type=int, default=384, help="images timed per side and round")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds of pause before each timed window (background refills end)")
    p.add_argument("--images", type=int, default=512, help="generated training JPEGs")
    p.add_argument("--mixing", type=int, default=32,
                   help="generated fractal mixing pictures (for the PixMix rows)")
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "dali_pixmix_bench"))
    p.add_argument("--pixmix-reference", default=None, metavar="DIR",
                   help="a checkout of the PixMix reference code (andyzoujm/pixmix: imagenet.py, "
                        "pixmix_utils.py, calibration_tools.py); without it the PixMix rows "
                        "are skipped")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    for flag in ("batch_size", "rounds", "workers", "measure", "images", "mixing"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    return args


# ----------------------------------------------------------------------------- torchvision side
def torchvision_transform(name: str, cfg: Config):
    """torchvision's per-image recipe for method `name` (PIL in, normalised float32 out)."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(CROP, antialias=True), v2.RandomHorizontalFlip()]
    if name == "autoaugment":
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET,
                                    interpolation=v2.InterpolationMode.NEAREST, fill=128))
    if name == "augmix":
        steps.append(v2.AugMix(severity=2, mixture_width=cfg.augment.augmix_width,
                               chain_depth=cfg.augment.augmix_depth,
                               alpha=cfg.augment.augmix_alpha, all_ops=cfg.augment.augmix_all_ops,
                               interpolation=v2.InterpolationMode.BILINEAR))
    steps += [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if name == "cutout":
        area = cutout_size(cfg) ** 2 / CROP ** 2
        steps.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0.0))
    return v2.Compose(steps)


def batch_mixing(name: str, cfg: Config, classes: int):
    """torchvision's batch transform of a label-mixing method (for the collate function)."""
    from torchvision.transforms import v2

    if name == "mixup":
        return v2.MixUp(alpha=cfg.augment.mixup_alpha, num_classes=classes)
    if name in ("cutmix", "pixmix_cutmix"):
        return v2.CutMix(alpha=cfg.augment.cutmix_alpha, num_classes=classes)
    return None


class MixingCollate:
    """default_collate, then a batch transform (picklable, for DataLoader workers)."""

    def __init__(self, mixing):
        self.mixing = mixing

    def __call__(self, samples):
        from torch.utils.data import default_collate

        return self.mixing(*default_collate(samples))


def seed_numpy_in_worker(_worker_id: int) -> None:
    """Distinct numpy draws per DataLoader worker (the reference code seeds them so too)."""
    np.random.seed(np.random.SeedSequence([torch.initial_seed()]).generate_state(4))


def torchvision_batches(dataset, args, mixing=None):
    """Endless batches of a DataLoader over `dataset`: one long shuffled epoch, so no worker
    restarts or epoch ends fall inside the timed windows."""
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=10**9)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        drop_last=True, worker_init_fn=seed_numpy_in_worker,
        collate_fn=None if mixing is None else MixingCollate(mixing))
    return endless(loader)


def load_reference(folder, mixing: Path, workdir: Path):
    """The reference code's `imagenet.py` as a module (it parses its command line and makes
    its save folder when imported), or the reason it cannot be loaded."""
    if folder is None:
        return None, "no --pixmix-reference checkout given (it is never downloaded)"
    script = Path(folder) / "imagenet.py"
    if not script.is_file():
        return None, f"{script} not found (--pixmix-reference: a checkout of andyzoujm/pixmix)"
    argv, sys.argv = sys.argv, [str(script), "--mixing-set", str(mixing), "--num-classes",
                                "1000", "--all-ops", "--save", str(workdir / "reference_save")]
    sys.path.insert(0, str(script.parent))  # its own modules: pixmix_utils, calibration_tools
    try:
        spec = importlib.util.spec_from_file_location("pixmix_reference_imagenet", script)
        module = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its arguments
            spec.loader.exec_module(module)
        return module, None
    except Exception as err:  # noqa: BLE001 - a row skipped with the reason, not a crash
        return None, f"importing {script} failed: {type(err).__name__}: {err}"
    finally:
        sys.argv = argv
        sys.path.remove(str(script.parent))


def reference_dataset(reference, train_root: Path, mixing: Path):
    """The reference's training set: PixMixDataset over ImageFolder as its main() builds it."""
    from torchvision import datasets, transforms

    train = datasets.ImageFolder(str(train_root), transforms.Compose([
        transforms.RandomResizedCrop(CROP), transforms.RandomHorizontalFlip()]))
    mixing_set = datasets.ImageFolder(str(mixing), transforms.Compose([
        transforms.Resize(256), transforms.RandomCrop(CROP)]))
    return reference.PixMixDataset(train, mixing_set, {
        "normalize": transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        "tensorize": transforms.ToTensor()})


def theirs(name: str, args, cfg: Config, train_root: Path, mixing: Path, reference,
           classes: int):
    from torchvision.datasets import ImageFolder

    if name in PIXMIX_ROWS:
        dataset = reference_dataset(reference, train_root, mixing)
    else:
        dataset = ImageFolder(str(train_root), torchvision_transform(name, cfg))
    return torchvision_batches(dataset, args, batch_mixing(name, cfg, classes))


# ----------------------------------------------------------------------------- one method
def compare(name: str, args, train_root: Path, mixing: Path, bank, reference) -> dict:
    """{"ours", "torchvision", "ratio"}: medians of the interleaved rounds of method `name`."""
    device = torch.device("cpu")
    cfg = method_config(name, CROP)
    classes = len(class_names(train_root))
    sources = {
        "ours": (method_batches(train_root, name, batch_size=args.batch_size, device=device,
                                bank=bank, classes=classes, num_threads=args.workers,
                                crop=CROP), DALI_DRAIN),
        "torchvision": (theirs(name, args, cfg, train_root, mixing, reference, classes),
                        dataloader_drain(args.workers))}
    try:
        rates = interleaved_medians(sources, args.rounds, args.measure, device, args.settle)
    finally:
        for batches, _ in sources.values():  # stop the pipeline and the workers
            batches.close()
        del sources
        gc.collect()
    return dict(rates, ratio=rates["ours"] / rates["torchvision"])


def chosen(args) -> list:
    return list(METHODS) if "all" in args.methods else list(dict.fromkeys(args.methods))


def table(results: dict, skipped: dict) -> str:
    rows = ["| method | ours, img/s | torchvision, img/s | ratio |", "|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['ours']:,.0f} | {r['torchvision']:,.0f} | "
                    f"{r['ratio']:.2f} |")
    rows += [f"| {name} | | | skipped: {why} |" for name, why in skipped.items()]
    return "\n".join(rows)


def run_methods(args, names, train_root: Path, mixing: Path) -> tuple:
    """({method: figures}, {method: why skipped}), one line printed per method."""
    results, skipped = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        reference, why, bank = None, None, None
        if any(n in PIXMIX_ROWS for n in names):
            reference, why = load_reference(args.pixmix_reference, mixing, Path(tmp))
        if reference is not None:
            bank = MixingBank.from_folder(mixing, size=256, device="cpu")
        for name in names:
            if name in PIXMIX_ROWS and reference is None:
                skipped[name] = f"the PixMix reference code is absent: {why}"
                print(f"method={name} skipped: {skipped[name]}", flush=True)
                continue
            r = results[name] = compare(name, args, train_root, mixing, bank, reference)
            print(f"method={name} ours={r['ours']:.1f} torchvision={r['torchvision']:.1f} "
                  f"ratio={r['ratio']:.2f}", flush=True)
    return results, skipped


def report(args, results: dict, skipped: dict, load: tuple) -> None:
    print(f"\nbatch {args.batch_size} x {CROP} px, normalised float32; {args.workers} DALI "
          f"threads vs {args.workers} DataLoader workers on {os.cpu_count()} cores; median of "
          f"{args.rounds} interleaved rounds of {args.measure} images; load average "
          f"{load[0]:.1f} before, {load[1]:.1f} after\n")
    print(table(results, skipped))
    print("\nDifferences between the sides:")
    for name in list(results) + list(skipped):
        print(f"- {name}: {DIFFERENCES[name]}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            results=results, skipped=skipped, batch_size=args.batch_size, rounds=args.rounds,
            workers=args.workers, images_per_round=args.measure, cores=os.cpu_count(),
            load_average=load), indent=2))


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]  # other jobs on the machine skew the figures: say so
    names = chosen(args)
    pixmix = args.pixmix_reference is not None and any(n in PIXMIX_ROWS for n in names)
    train_root, mixing = benchmark_data(args.cache_dir, args.images, args.mixing * pixmix)
    results, skipped = run_methods(args, names, train_root, mixing)
    report(args, results, skipped, (load_before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
