#!/usr/bin/env python3
"""Write a small generated CIFAR-10/100 data set in both official formats, with C, C-bar and P.

Under ROOT: cifar-10-batches-py/ and cifar-10-batches-bin/ (the same pictures; CIFAR-100:
cifar-100-python/, cifar-100-binary/), and CIFAR-10-C/, CIFAR-10-C-Bar/, CIFAR-10-P/ made from
the test split with the project's generated corruptions (stand-ins, not the released sets).
Each class is a drawn object whose shape, texture and hue depend on the class, so a small
network learns it in minutes on CPU. Reruns with the same settings are no-ops; a folder holding
other data is never overwritten.

Example:
    python tools/make_synthetic_cifar.py data/cifar_demo --train-per-class 100
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dali_pixmix.data.cifar import DATASETS, NUM_CLASSES  # noqa: E402
from dali_pixmix.evaluation.cli import run_cli  # noqa: E402
from dali_pixmix.evaluation.synthetic_cifar import make_synthetic_cifar_suite  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("root", help="output folder (created)")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS,
                   help="which official layout to write")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes (default: 10 for cifar10, 100 for cifar100; distinct up to 24)")
    p.add_argument("--train-per-class", type=int, default=50)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--frames", type=int, default=8, help="frames of each CIFAR-P sequence")
    p.add_argument("--no-corruptions", action="store_true",
                   help="write only the train and test splits (no C, C-bar, P)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p.parse_args(argv)


def write(argv=None) -> int:
    args = parse_args(argv)
    paths = make_synthetic_cifar_suite(args.root, args.dataset, args.num_classes,
                                       args.train_per_class, args.test_per_class, args.seed,
                                       args.frames, corrupted=not args.no_corruptions,
                                       progress=not args.no_progress)
    classes = args.num_classes or NUM_CLASSES[args.dataset]
    sets = ", ".join(f"{key}: {path}" for key, path in paths.items() if key != "root")
    print(f"synthetic {args.dataset}: {classes} classes, {args.train_per_class}+"
          f"{args.test_per_class} pictures per class in both formats under {paths['root']}"
          + (f"; {sets}" if sets else ""))
    return 0


def main(argv=None) -> int:
    """Bad input: one `error:` line and exit status 2; a file-system failure: 1."""
    return run_cli(write, argv)


if __name__ == "__main__":
    sys.exit(main())
