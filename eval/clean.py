#!/usr/bin/env python3
"""Clean ImageNet validation: top-1/top-5 error, RMS calibration error and ECE; with --pgd also
the top-1 error on PGD adversaries of the same images (<out>/results/pgd.json; the paper leaves
it out for ImageNet, where it goes to ~100%)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cifar_cli, cli, run_clean  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--val", required=True, help="ImageNet val folder: <val>/<wnid>/<image>")
    cifar_cli.add_pgd_args(parser)
    args = parser.parse_args(argv)
    pgd = cifar_cli.pgd_settings(args)
    ev = cli.evaluator_from_args(args)
    rows = run_clean(ev, args.val, bin_size=args.calibration_bin_size)
    cli.finish(ev, "clean", rows, args.name, ("top1_error", "top5_error", "rms", "ece"))
    if pgd is not None:
        from dali_pixmix.evaluation.pgd import run_pgd_imagenet
        cli.finish(ev, "pgd", run_pgd_imagenet(ev, args.val, pgd), args.name, ("error",))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
