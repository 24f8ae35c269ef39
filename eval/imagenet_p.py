#!/usr/bin/env python3
"""ImageNet-P prediction consistency: flip probability, top-5 distance, mFR and mT5D.

    python eval/imagenet_p.py --checkpoint ckpt.pt --root /data/ImageNet-P --out results/
    torchrun --nproc_per_node 8 eval/imagenet_p.py --checkpoint ckpt.pt --root ... --out ...

Videos are split across ranks by global rank; predictions are cached per perturbation under
<out>/cache/imagenet_p, so a rerun resumes where it stopped. Writes imagenet_p.{json,csv}
(tidy rows), imagenet_p_details.json (per perturbation, skipped videos) and
imagenet_p_flip_rates.png.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import dali_pixmix  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dali_pixmix.distributed import cleanup, init_distributed
from dali_pixmix.imagenet_p import checkpoint_fingerprint, run_imagenet_p
from dali_pixmix.models import load_classifier


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="our checkpoint or a torchvision state_dict")
    parser.add_argument("--arch", default=None, help="torchvision model name (default: from the checkpoint)")
    parser.add_argument("--root", required=True, help="ImageNet-P root: <root>/<perturbation>/<wnid>/*.mp4")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=256, help="frames per forward pass (whole videos)")
    parser.add_argument("--difficulty", type=int, default=1, choices=(1, 2, 3),
                        help="noise reads <name>_<d> folders, others compare frames d apart; "
                             "normalised FR/T5D only for 1")
    parser.add_argument("--perturbations", default="test",
                        help="'test' (the 10 of mFR), 'all' (with validation ones) or a comma list")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--backend", default="auto", choices=("auto", "dali", "pyav"),
                        help="video decoder: auto = DALI (NVDEC) on GPU, PyAV on CPU")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 on the GPU")
    parser.add_argument("--workers", type=int, default=4, help="PyAV decode threads (CPU backend)")
    parser.add_argument("--cache-dir", default=None, help="default: <out>/cache/imagenet_p")
    return parser.parse_args(argv)


def summary_line(table, rows, out: str) -> str:
    per = {k: v for k, v in table.items() if k != "mean"}
    videos = sum(v["videos"] for v in per.values())
    skipped = sum(len(v["skipped"]) for v in per.values())
    cached = sum(v["from_cache"] for v in per.values())
    if "mean" in table:
        head = f"mFR {table['mean']['mfr']:.1f}  mT5D {table['mean']['mt5d']:.1f}"
    else:
        mean = next(r for r in rows if r.variant == "mean" and r.metric == "flip_prob")
        head = f"mean flip prob {mean.value:.2f}% (no mFR: not the 10 test perturbations at difficulty 1)"
    return (f"ImageNet-P: {head} over {len(per)} perturbations, {videos} videos, "
            f"{skipped} skipped, {cached} from cache -> {Path(out) / 'imagenet_p.json'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = init_distributed(args.device)
        model, classes = load_classifier(args.checkpoint, args.arch, info.device)
        rows, table = run_imagenet_p(
            model, classes, args.root, args.out, info, difficulty=args.difficulty,
            perturbations=args.perturbations, batch_size=args.batch_size, amp=args.amp,
            backend=args.backend, workers=args.workers, cache_dir=args.cache_dir,
            fingerprint=checkpoint_fingerprint(args.checkpoint, args.arch))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    if info.is_main:
        print(summary_line(table, rows, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
