#!/usr/bin/env python3
"""Anomaly detection: AUROC, AUPR and FPR95 per OOD set and their mean (MSP, MaxLogit, Energy).

Convention: higher score = more anomalous; anomalies are the positive class (AUPR-Out);
FPR95 = fraction of in-distribution images flagged at the threshold whose anomaly recall is
closest to 95%, the lowest such threshold when several give the same recall (the
outlier-exposure reference code's convention; OpenOOD's direction, many papers use the
opposite). In-distribution = the ImageNet val images given by --val. OOD sets: any folders
(images at any depth) or text file lists via --ood NAME=PATH, plus the seeded synthetic
Gaussian, Rademacher and Blobs sets, generated in memory at the crop size and fed unresized
(1/5 of the in-distribution count each unless --synthetic-count is given).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cli, run_ood  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--val", required=True, help="in-distribution folder <val>/<wnid>/<image>")
    parser.add_argument("--ood", nargs="*", default=[], metavar="NAME=PATH",
                        help="OOD sets: a folder or a text file list each")
    parser.add_argument("--no-synthetic", action="store_true",
                        help="skip the generated Gaussian/Rademacher/Blobs sets")
    parser.add_argument("--synthetic-count", type=int, default=None,
                        help="images per synthetic set (default: 1/5 of the val count)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets")
    args = parser.parse_args(argv)
    sets = cli.parse_named_paths(args.ood)
    ev = cli.evaluator_from_args(args)
    rows = run_ood(ev, args.val, sets, synthetic=not args.no_synthetic,
                   synthetic_count=args.synthetic_count, seed=args.seed)
    from dali_pixmix.metrics.ood import DIRECTION  # after the arguments: it loads torch

    ev.log(f"convention: {DIRECTION}")
    cli.finish(ev, "ood", rows, args.name, ("auroc", "aupr", "fpr95"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
