#!/usr/bin/env python3
"""Render procedural fractal pictures (PNG) to use as a PixMix mixing set.

Families: random affine IFS (FractalDB-like, optionally rotationally symmetric), flame-like IFS
with non-linear variations, Julia and Mandelbrot escape-time sets; picture i depends only on
(seed, i), so sets made with the same seed agree file by file.
"""
import argparse
import sys

from dali_pixmix.cli_help import DefaultsHelpFormatter
from dali_pixmix.mixing.fractals import make_fractals
from dali_pixmix.mixing.preview import write_contact_sheet


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("out_dir", help="folder for fractal_<i>.png (created)")
    p.add_argument("-n", "--num", type=int, default=64, help="number of pictures")
    p.add_argument("--size", type=int, default=256, help="picture side, px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--contact-sheet", metavar="PNG", default=None,
                   help="also write a tiled overview of (up to 64) pictures to this PNG")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p, p.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    if args.num < 1:
        parser.error("--num must be >= 1")
    extra = ""
    try:
        paths = make_fractals(args.out_dir, n=args.num, size=args.size, seed=args.seed,
                              progress=not args.no_progress)
        if args.contact_sheet:
            write_contact_sheet(paths, args.contact_sheet)
            extra = f", contact sheet {args.contact_sheet}"
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, no usage text
        return 2
    print(f"fractals: {len(paths)} pictures of {args.size} px in {args.out_dir}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
