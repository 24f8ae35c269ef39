#!/usr/bin/env python3
"""Plot training curves (loss, validation accuracy, calibration, learning rate by epoch) of one
or more training runs, overlaid, from their metrics.jsonl.

A run draws its own <train.output_dir>/curves.png while it trains; this overlays several, e.g.
the baseline and the PixMix recipe.

Example: python tools/plot_training.py runs/baseline runs/pixmix --out runs/curves.png
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.evaluation import cli  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders")
    p.add_argument("--names", nargs="+", metavar="NAME", default=None,
                   help="one legend name per run (default: each folder's name)")
    p.add_argument("--out", default="curves.png", help="the PNG to write")
    p.add_argument("--title", default="training curves", help="the figure's title")
    args = p.parse_args(argv)
    from dali_pixmix.training.curves import read_metrics, write_curves

    names = args.names or [Path(run).resolve().name for run in args.runs]
    if len(names) != len(args.runs):
        raise ValueError(f"--names gives {len(names)} name(s) for {len(args.runs)} run(s)")
    if len(set(names)) != len(names):
        raise ValueError(f"two runs share a name in {names}; tell them apart with --names")
    runs = {name: read_metrics(run) for name, run in zip(names, args.runs)}
    print(f"wrote {write_curves(runs, args.out, args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
