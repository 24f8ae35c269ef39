#!/usr/bin/env python3
"""ImageNet-R: error and calibration on the model's logits masked to the folder classes.

The mask is built by looking the folder wnids up in the model's own class list; softmax,
accuracy and calibration all use the masked logits.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cli, run_imagenet_r  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--root", required=True, help="ImageNet-R folder: <root>/<wnid>/<image>")
    args = parser.parse_args(argv)
    ev = cli.evaluator_from_args(args)
    rows = run_imagenet_r(ev, args.root, args.calibration_bin_size)
    cli.finish(ev, "imagenet_r", rows, args.name, ("top1_error", "rms", "ece"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
