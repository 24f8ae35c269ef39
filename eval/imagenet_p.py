#!/usr/bin/env python3
"""ImageNet-P prediction consistency: flip probability, top-5 distance, mFR and mT5D.

Frames are fed unresized (--resize/--crop do not apply); --batch-size counts frames per forward
pass summed over ranks (whole videos are grouped). Videos are split across ranks by global
rank under torchrun; predictions are cached per perturbation in <out>/cache/imagenet_p, so a
rerun resumes. Writes
<out>/results/imagenet_p.json|csv (rows), <out>/table9.md (P columns),
<out>/imagenet_p_details.json (per perturbation, skipped videos by name) and
<out>/plots/imagenet_p_flip_rates.png.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.evaluation import cli  # noqa: E402


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--root", required=True,
                        help="ImageNet-P folder: <root>/<perturbation>/<wnid>/<name>.mp4")
    parser.add_argument("--difficulty", type=int, default=1, choices=(1, 2, 3),
                        help="noise reads <name>_<d> folders, the others compare frames d apart; "
                             "normalised FR/T5D and mFR/mT5D exist for 1 only")
    parser.add_argument("--perturbations", default="test",
                        help="'test' (the 10 of mFR), 'all' (plus validation ones) or a comma list")
    parser.add_argument("--backend", default="auto", choices=("auto", "dali", "pyav"),
                        help="video decoder: auto = DALI/NVDEC on GPU, PyAV on CPU")
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 on the GPU (default: float16 autocast)")
    args = parser.parse_args(argv)
    from dali_pixmix.evaluation.imagenet_p import run_imagenet_p_task  # loads torch and DALI

    ev = cli.evaluator_from_args(args, resizes=False)  # frames are fed unresized
    rows = run_imagenet_p_task(ev, args.root, difficulty=args.difficulty,
                               perturbations=args.perturbations, backend=args.backend, amp=args.amp)
    cli.finish(ev, "imagenet_p", rows, args.name, ("mfr", "mt5d"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
