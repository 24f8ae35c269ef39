#!/usr/bin/env python3
"""ImageNet-C-bar: plain mean top-1 error and mean RMS calibration over the 50 cells.

Severity folders may be named 1..5 or by their float parameter (e.g. 2.35); the latter are
sorted numerically and mapped to 1..5, and the output says so.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cli, run_imagenet_cbar  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--root", required=True,
                        help="ImageNet-C-bar folder: <root>/<corruption>/<severity>/<wnid>/<image>")
    cli.add_corruption_args(parser)
    args = parser.parse_args(argv)
    ev = cli.evaluator_from_args(args)
    rows = run_imagenet_cbar(ev, args.root, args.protocol, args.corruptions,
                             args.calibration_bin_size)
    cli.finish(ev, "imagenet_cbar", rows, args.name, ("mean_error", "rms"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
