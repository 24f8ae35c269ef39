#!/usr/bin/env python3
"""Render feature visualisations (PNG) of a trained classifier to use as PixMix mixing pictures.

One picture per (layer, channel), `<layer>_<channel:04d>.png`, maximising the channel's mean
activation (Fourier + decorrelated-colour parameterisation, transformation robustness, Adam).
Existing pictures are skipped, so an interrupted run resumes: `fvis_run.json` records the
checkpoint's weights, the architecture and the settings, and an --out made otherwise is refused
(naming the difference) instead of being credited to this checkpoint. `fvis_summary.json` next
to the pictures compares each picture's target activation with noise and fractal pictures.

Example (the paper's kind of set from torchvision's ResNet-50 weights, docs/data.md):
    python tools/make_fvis.py --checkpoint weights/resnet50-0676ba61.pth \
        --layers relu,layer1,layer2 --out mixing/fvis --contact-sheet mixing/fvis_sheet.png
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.distributed import pick_device  # noqa: E402
from dali_pixmix.evaluation.cli import run_cli  # noqa: E402
from dali_pixmix.mixing import fvis  # noqa: E402
from dali_pixmix.mixing.preview import write_contact_sheet  # noqa: E402
from dali_pixmix.models import load_fvis_checkpoint  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="dali-pixmix checkpoint or torchvision state_dict (.pt/.pth)")
    p.add_argument("--arch", default=None,
                   help="torchvision model name (default: the checkpoint's, else resnet50)")
    p.add_argument("--layers", default="relu,layer1,layer2",
                   help="comma-separated module names (relu, layer1, layer2.0.conv2, ...); "
                   "a ResNet's first layer is relu: conv1 is affine and comes out flat")
    p.add_argument("--channels", type=int, default=None,
                   help="first N channels of each layer (default: all)")
    p.add_argument("--size", type=int, default=256, help="picture side, px")
    p.add_argument("--steps", type=int, default=512, help="Adam steps per picture")
    p.add_argument("--batch", type=int, default=64, help="pictures optimised together")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", required=True, help="folder for the PNGs (created)")
    p.add_argument("--contact-sheet", metavar="PNG", default=None,
                   help="also write a tiled overview of (up to 64) pictures to this PNG "
                   "(outside --out, or it would become a mixing picture)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p, p.parse_args(argv)


def check_args(parser, args) -> None:
    for name in ("size", "steps", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.size < 32:
        parser.error("--size must be >= 32 (the network downsamples 32x)")
    if args.contact_sheet:
        sheet, out = Path(args.contact_sheet).resolve(), Path(args.out).resolve()
        if out in sheet.parents:
            parser.error(f"--contact-sheet {args.contact_sheet} lies inside --out {args.out}; "
                         "put it elsewhere so it does not become a mixing picture")


def warn_affine(model, layers, device) -> None:
    for name in fvis.affine_layers(model, fvis.resolve_layers(model, layers), device):
        print(f"warning: layer {name} is an affine function of the image, so its mean "
              "activation follows the mean colour and its pictures come out nearly flat; "
              "visualise a rectified output instead (torchvision ResNets: relu)", file=sys.stderr)


def run(args) -> dict:
    device = pick_device(0, args.device)
    settings = fvis.FVisSettings(size=args.size, steps=args.steps, batch=args.batch, lr=args.lr,
                                 seed=args.seed)
    model, arch, weights = load_fvis_checkpoint(args.checkpoint, args.arch, device)
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    if not layers:
        raise ValueError("--layers is empty; name at least one layer, e.g. layer1")
    fvis.resolve_layers(model, layers)  # an unknown layer is refused before --out is claimed
    fvis.claim_out_dir(args.out, fvis.run_record(args.checkpoint, weights, arch, settings))
    warn_affine(model, layers, device)
    jobs = fvis.make_fvis(model, layers, args.out, args.channels, settings, device,
                          progress=not args.no_progress)
    summary = fvis.measure_quality(model, jobs, args.out, args.size, device, seed=args.seed)
    fvis.write_summary(summary, args.out, settings, args.checkpoint, arch, weights)
    if args.contact_sheet:
        write_contact_sheet([Path(args.out) / fvis.picture_name(*job) for job in jobs],
                            args.contact_sheet)
    return summary


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def main(argv=None) -> int:
    """Bad input: one error line and exit status 2; a file-system failure: 1."""
    return run_cli(render, argv, interrupted="interrupted (Ctrl-C): the pictures already "
                   "written are kept; the same command goes on from them")


def render(argv=None) -> int:
    parser, args = parse_args(argv)
    check_args(parser, args)
    start = time.perf_counter()
    summary = run(args)
    print(f"fvis: {summary['pictures']} pictures of {args.size} px in {args.out} "
          f"({time.perf_counter() - start:.1f} s); median target activation "
          f"{fmt(summary['median_ratio_noise'])} noise, {fmt(summary['median_ratio_fractal'])} "
          f"fractals; details in {Path(args.out) / fvis.SUMMARY_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
