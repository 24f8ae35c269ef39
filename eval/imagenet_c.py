#!/usr/bin/env python3
"""ImageNet-C: mCE over the 15 test corruptions, mean error, per-corruption CE, RMS per cell.

The 4 extra corruptions are reported separately when present. --protocol pixmix (default) applies
Resize(resize)+CenterCrop(crop) to the 224 px images, as the PixMix/AugMix reference code did;
--protocol unresized feeds them as they are (centre crop only), as the benchmark's own code and
RobustBench do. Every row records the protocol. Fewer than 15 corruptions give a partial mean
labelled "partial: N of 15 corruptions", never an mCE.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cli, run_imagenet_c  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--root", required=True,
                        help="ImageNet-C folder: <root>/<corruption>/<1..5>/<wnid>/<image>")
    cli.add_corruption_args(parser)
    args = parser.parse_args(argv)
    ev = cli.evaluator_from_args(args)
    rows = run_imagenet_c(ev, args.root, args.protocol, args.corruptions, args.calibration_bin_size,
                          clean_error=cli.clean_error_from(args.out))
    cli.finish(ev, "imagenet_c", rows, args.name,
               ("mce", "mce_partial", "mean_error", "rms", "relative_mce"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
