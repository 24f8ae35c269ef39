#!/usr/bin/env python3
"""Train the CPU demo once per augmentation method and compare them in the paper's Table 9 layout.

Every method gets the same recipe, seed and generated data (only augment.method differs); each
is evaluated by the evaluation suite (clean error and calibration, a generated corruption set in
the ImageNet-C layout, the generated anomaly sets). Writes <out>/comparison.md, .csv and .png;
each method's run, rows and table9.md stay in <out>/<method>/. Finished methods are not trained
again, so an interrupted comparison resumes; SIGTERM/SIGUSR1 stop it (training first saves a
checkpoint) with exit status 1. Demo data at a small scale: the output says so first.

By default the paper's Table 9 methods (baseline, AugMix, PixMix); --methods all trains the ten.
Example: python tools/compare_methods.py --methods baseline mixup pixmix
"""
import argparse
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))  # run from a source checkout

from dali_pixmix.augment.methods import METHOD_NAMES, TABLE9_METHODS  # noqa: E402
from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(TABLE9_METHODS),
                   choices=(*METHOD_NAMES, "all"), metavar="METHOD",
                   help=f"methods to compare, or all: {', '.join(METHOD_NAMES)}")
    p.add_argument("--recipe", default=None,
                   help="training recipe shared by every method (default: this checkout's "
                        "configs/demo_compare.yaml, from any working folder)")
    p.add_argument("--out", default="runs/compare_methods", help="output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value for every method, e.g. --set train.epochs=2")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Bad input: one error line and exit status 2; a training run that failed or stopped: 1."""
    from dali_pixmix.evaluation.cli import run_cli

    return run_cli(compare_all, argv, failures=(RuntimeError,))


def compare_all(argv=None) -> int:
    args = parse_args(argv)
    from dali_pixmix.training.compare import ComparisonStopped, compare

    methods = list(METHOD_NAMES) if "all" in args.methods else args.methods
    try:
        recipe = args.recipe or CHECKOUT / "configs" / "demo_compare.yaml"
        paths = compare(recipe, args.out, methods, args.overrides)
    except ComparisonStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(Path(paths[0]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
