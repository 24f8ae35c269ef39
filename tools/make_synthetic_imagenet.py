#!/usr/bin/env python3
"""Write a small learnable ImageNet-style dataset (root/train|val/<wnid>/*.JPEG).

Each class is a procedurally drawn object whose shape, texture and hue band depend on the class,
so a small network learns it in minutes on CPU; use it for demos, smoke tests and benchmarks.
"""
import argparse
import sys

from dali_pixmix.cli_help import DefaultsHelpFormatter
from dali_pixmix.data.synthetic import make_synthetic_imagenet


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("root", help="output folder (created); reruns with the same settings are no-ops")
    p.add_argument("--num-classes", type=int, default=10, help="classes (distinct up to 24)")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--min-size", type=int, default=64, help="smallest image side, px")
    p.add_argument("--max-size", type=int, default=160, help="largest image side, px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        root = make_synthetic_imagenet(args.root, num_classes=args.num_classes,
                                       train_per_class=args.train_per_class,
                                       val_per_class=args.val_per_class, seed=args.seed,
                                       min_size=args.min_size, max_size=args.max_size,
                                       progress=not args.no_progress)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, no usage text
        return 2
    total = args.num_classes * (args.train_per_class + args.val_per_class)
    print(f"synthetic imagenet: {args.num_classes} classes, {total} images "
          f"({args.train_per_class}+{args.val_per_class} per class) in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
