"""Command-line plumbing of eval/cifar.py, and the PGD flags eval/clean.py shares with it.

Nothing heavy is imported here (argparse only): the scripts answer `--help` and argument
errors before torch and DALI load; the library is imported once the arguments are parsed.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict


def add_pgd_args(parser: argparse.ArgumentParser) -> None:
    """--pgd and its settings (the paper's "Adversaries" column by default)."""
    g = parser.add_argument_group("PGD adversaries (untargeted l-inf, summed cross-entropy)")
    g.add_argument("--pgd", action="store_true",
                   help="evaluate the top-1 error on PGD adversaries of the clean test images")
    g.add_argument("--pgd-epsilon", default="2/255",
                   help="l-inf radius in [0, 1] pixel units, a number or a fraction")
    g.add_argument("--pgd-steps", type=int, default=20, help="attack steps")
    g.add_argument("--pgd-step-size", default="0.5/255", help="step size in pixel units")
    g.add_argument("--pgd-ball", default="clean", choices=("clean", "reference"),
                   help="centre of the projection: the clean image (the l-inf threat model), "
                        "or the random start as the reference code (its published numbers)")
    g.add_argument("--pgd-seed", type=int, default=0, help="seed of the per-image start noise")
    g.add_argument("--pgd-count", type=int, default=None,
                   help="attack only this many evenly spaced images (default: all)")


def pgd_settings(args: argparse.Namespace):
    """`evaluation.pgd.PgdSettings` of the parsed flags, or None without --pgd."""
    if not args.pgd:
        return None
    from dali_pixmix.evaluation.pgd import PgdSettings, parse_fraction

    return PgdSettings(epsilon=parse_fraction(args.pgd_epsilon, "--pgd-epsilon"),
                       steps=args.pgd_steps,
                       step_size=parse_fraction(args.pgd_step_size, "--pgd-step-size"),
                       ball=args.pgd_ball, seed=args.pgd_seed, count=args.pgd_count)


def add_cifar_args(parser: argparse.ArgumentParser) -> None:
    """The data flags of eval/cifar.py."""
    parser.add_argument("--data-root", required=True,
                        help="folder holding cifar-10-batches-py/ or -bin/ (CIFAR-100: "
                             "cifar-100-python/ or -binary/); C, C-bar and P folders under it "
                             "by the reference's names (CIFAR-10-C, CIFAR-10-C-Bar, CIFAR-10-P) "
                             "and OOD folders under ood/ are found without flags")
    parser.add_argument("--dataset", default=None, choices=("cifar10", "cifar100"),
                        help="(default: the checkpoint's data.dataset; needed when it records "
                             "no config)")
    parser.add_argument("--cifar-c", default=None, help="CIFAR-10-C / CIFAR-100-C folder "
                        "(<corruption>.npy of 5 severities x n images, labels.npy)")
    parser.add_argument("--cifar-cbar", default=None, help="CIFAR-10-C-bar / CIFAR-100-C-bar "
                        "folder (the same layout, its 10 corruptions)")
    parser.add_argument("--cifar-p", default=None, help="CIFAR-10-P / CIFAR-100-P folder "
                        "(<perturbation>.npy of [videos, frames, 32, 32, 3])")
    parser.add_argument("--p-difficulty", type=int, default=1, choices=(1, 2, 3),
                        help="CIFAR-P difficulty (noise: <name>_<d>.npy; others: frames d apart)")
    parser.add_argument("--ood", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="anomaly sets: a folder (pictures at any depth, resized to 32 px) "
                             "or a text file list each, e.g. textures=/data/dtd/images")
    parser.add_argument("--no-synthetic", action="store_true",
                        help="leave out the generated Gaussian, Rademacher and Blobs sets")
    parser.add_argument("--synthetic-count", type=int, default=None,
                        help="pictures per generated set (default: 1/5 of the test set)")
    parser.add_argument("--no-near-ood", action="store_true",
                        help="leave out the other CIFAR's test split as near-OOD")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated sets")


def cifar_sets(args: argparse.Namespace, dataset: str) -> Dict[str, object]:
    """{"c", "cbar", "p", "ood"} from the flags, else found under --data-root."""
    from dali_pixmix.evaluation.cifar import discover_sets
    from dali_pixmix.evaluation.cli import parse_named_paths

    found = discover_sets(args.data_root, dataset) if Path(args.data_root).is_dir() else {}
    sets = {key: getattr(args, flag) or found.get(key)
            for key, flag in (("c", "cifar_c"), ("cbar", "cifar_cbar"), ("p", "cifar_p"))}
    sets["ood"] = {**(found.get("ood") or {}), **parse_named_paths(args.ood)}
    return sets


def check_counts(args: argparse.Namespace) -> None:
    """--synthetic-count must be positive, checked before anything is loaded (the PGD flags
    are checked by `pgd_settings`)."""
    if args.synthetic_count is not None and args.synthetic_count < 1:
        raise ValueError(f"--synthetic-count must be >= 1, got {args.synthetic_count}")
