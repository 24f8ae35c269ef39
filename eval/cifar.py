#!/usr/bin/env python3
"""The CIFAR safety suite of a CIFAR checkpoint (PixMix paper, Tables 7 and 8).

Runs every task whose data is given, on the dataset the checkpoint was trained on (CIFAR-10 or
-100, its data.dataset): clean error, RMS calibration error and ECE on the test split; CIFAR-C
(plain mean error over the 15 corruptions x 5 severities, no AlexNet normalisation; per
corruption and severity; RMS) with --cifar-c; CIFAR-C-bar (its 10 corruptions) with
--cifar-cbar; CIFAR-P (unnormalised mFR in percent and mT5D in rank units; noise sequences
against the first frame) with --cifar-p; PGD adversarial error with --pgd; anomaly detection
against the test split (generated Gaussian, Rademacher and Blobs at 32 px, --ood folders resized
to 32 px, the other CIFAR under --data-root as near-OOD; MSP, MaxLogit, Energy; AUROC, AUPR,
FPR95). Pictures are fed at 32 px as they are, normalised with mean = std = 0.5 (--resize and
--crop do not apply). Results: <out>/results/<task>.json|csv, <out>/table8.md (CIFAR-10) or
table7.md (CIFAR-100) with the paper's rows, <out>/plots/*.png; cached per cell, so a rerun
goes on where it stopped.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cifar_cli, cli  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    cifar_cli.add_cifar_args(parser)
    cifar_cli.add_pgd_args(parser)
    args = parser.parse_args(argv)
    cifar_cli.check_counts(args)
    pgd = cifar_cli.pgd_settings(args)  # its flags checked before anything is loaded
    from dali_pixmix.checkpoint import read_checkpoint
    from dali_pixmix.evaluation.cifar import (
        CifarSuite,
        checkpoint_dataset,
        cifar_evaluator,
        run_cifar_suite,
    )

    ckpt = read_checkpoint(args.checkpoint)  # once: the dataset, then the weights
    dataset = checkpoint_dataset(args.checkpoint, args.dataset, ckpt)
    sets = cifar_cli.cifar_sets(args, dataset)
    suite = CifarSuite(root=args.data_root, c=sets["c"], cbar=sets["cbar"], p=sets["p"],
                       ood=sets["ood"], synthetic_ood=not args.no_synthetic,
                       near_ood=not args.no_near_ood, synthetic_count=args.synthetic_count,
                       pgd=pgd, p_difficulty=args.p_difficulty,
                       bin_size=args.calibration_bin_size, seed=args.seed)
    ev, dataset = cifar_evaluator(args.checkpoint, args.out, dataset=dataset, arch=args.arch,
                                  ckpt=ckpt, device=args.device, batch_size=args.batch_size,
                                  num_threads=args.num_threads)
    del ckpt  # the evaluator holds the weights; the file's other state (optimizer) can go
    result = run_cifar_suite(ev, dataset, suite, args.name)
    if ev.dist.is_main:
        print(result.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
