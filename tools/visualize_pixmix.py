#!/usr/bin/env python3
"""Write a PNG grid of PixMix draws: originals in the first column, PixMix results beside them.

Images come from a folder (found as everywhere in dali-pixmix: any depth, hidden files skipped,
``data.images.IMAGE_EXTENSIONS``), as do mixing pictures; when a folder is not given, synthetic
object pictures and procedural fractals are generated instead (``dali_pixmix.data.synthetic``).
Images are resized (shorter side) and centre-cropped to --size; mixing pictures get the
reference recipe, resize to size * 256 / 224 then a random crop.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dali_pixmix.augment.pixmix import pixmix
from dali_pixmix.cli_help import DefaultsHelpFormatter
from dali_pixmix.data import synthetic
from dali_pixmix.data.images import scan_images
from dali_pixmix.mixing.fractals import fractal_image


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--out", default="pixmix_grid.png", help="PNG file to write")
    p.add_argument("--images", default=None, help="folder of images (default: generated)")
    p.add_argument("--mixing", default=None, help="folder of mixing pictures (default: fractals)")
    p.add_argument("--rows", type=int, default=6, help="number of original images")
    p.add_argument("--draws", type=int, default=5, help="PixMix draws per image")
    p.add_argument("--size", type=int, default=224, help="side of every cell, px")
    p.add_argument("--k", type=int, default=4, help="maximum number of mixing rounds")
    p.add_argument("--beta", type=float, default=4.0, help="mixing coefficient parameter")
    p.add_argument("--severity", type=float, default=1.0, help="augmentation severity")
    p.add_argument("--no-all-ops", action="store_true",
                   help="use the 9 base ops only (without color/contrast/brightness/sharpness)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    return p, p.parse_args(argv)


def resize_shorter(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    scale = side / min(w, h)
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)


def crop(img: Image.Image, size: int, rng=None) -> np.ndarray:
    """Centre crop, or a uniformly random crop when ``rng`` is given; uint8 HxWx3."""
    w, h = img.size
    x0 = (w - size) // 2 if rng is None else int(rng.integers(w - size + 1))
    y0 = (h - size) // 2 if rng is None else int(rng.integers(h - size + 1))
    return np.asarray(img.crop((x0, y0, x0 + size, y0 + size)).convert("RGB"))


def load_originals(folder, rows, size, rng) -> np.ndarray:
    if folder is None:
        return np.stack([synthetic.synthetic_object_image(i, rng, size, size) for i in range(rows)])
    files = scan_images(folder)[:rows]
    return np.stack([crop(resize_shorter(Image.open(f).convert("RGB"), size), size) for f in files])


def load_mixing(folder, count, size, rng) -> np.ndarray:
    """``count`` mixing pictures drawn uniformly (with replacement), reference preparation."""
    big = round(size * 256 / 224)
    if folder is None:
        pool = [fractal_image(rng, big) for _ in range(min(count, 12))]
        pictures = [Image.fromarray(pool[i]) for i in rng.integers(len(pool), size=count)]
    else:
        files = scan_images(folder)
        pictures = [Image.open(files[i]).convert("RGB")
                    for i in rng.integers(len(files), size=count)]
    return np.stack([crop(resize_shorter(p, big), size, rng) for p in pictures])


def grid(originals: np.ndarray, draws: np.ndarray, gap: int = 4) -> np.ndarray:
    """uint8 grid: row i = originals[i] then draws[i, 0..d-1], separated by white gaps."""
    rows, cols = originals.shape[0], 1 + draws.shape[1]
    size = originals.shape[1]
    out = np.full((rows * (size + gap) - gap, cols * (size + gap) - gap, 3), 255, np.uint8)
    for r in range(rows):
        cells = [originals[r]] + list(draws[r])
        for c, cell in enumerate(cells):
            top, left = r * (size + gap), c * (size + gap)
            out[top:top + size, left:left + size] = cell
    return out


def main(argv=None):
    parser, args = parse_args(argv)
    if args.rows < 1 or args.draws < 1 or args.size < 16:
        parser.error("--rows and --draws must be >= 1 and --size >= 16")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    rng = np.random.default_rng(args.seed)
    try:
        originals = load_originals(args.images, args.rows, args.size, rng)
        mixing = load_mixing(args.mixing, len(originals) * args.draws, args.size, rng)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    batch = torch.from_numpy(np.repeat(originals, args.draws, axis=0)).to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    mixed = pixmix(batch, torch.from_numpy(mixing).to(device), k=args.k, beta=args.beta,
                   severity=args.severity, all_ops=not args.no_all_ops, generator=gen)
    draws = (mixed * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    draws = draws.reshape(len(originals), args.draws, *draws.shape[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(originals, draws)).save(args.out)
    ops = "9 ops" if args.no_all_ops else "all 13 ops"
    print(f"wrote {args.out}: {len(originals)} images x {args.draws} PixMix draws "
          f"({args.size} px, k={args.k}, beta={args.beta}, severity={args.severity}, {ops}, "
          f"{device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
