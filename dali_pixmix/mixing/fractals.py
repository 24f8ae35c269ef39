"""Procedural fractal mixing pictures (the fractal half of PixMix's mixing set), seeded.

Four families (random affine IFS, flame IFS with a non-linear variation, Julia and Mandelbrot
escape-time sets) on a dark background; picture i of a set uses ``numpy.random.default_rng([seed,
i])`` so any picture can be regenerated on its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm


def cosine_palette(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A random smooth colour map t -> RGB in [0, 1] (a + b cos(2 pi (c t + d)))."""
    a = rng.uniform(0.45, 0.6, size=3)
    b = rng.uniform(0.35, 0.5, size=3)
    c = rng.uniform(0.5, 1.5, size=3) * rng.choice([1.0, 2.0])
    d = rng.uniform(0, 1, size=3)

    def palette(t: np.ndarray) -> np.ndarray:
        return np.clip(a + b * np.cos(2 * np.pi * (c * t[..., None] + d)), 0, 1)

    return palette


def _rotation(t: float) -> np.ndarray:
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _random_contractive_map(rng: np.random.Generator):
    """Affine map x -> A x + t with singular values in (0.2, 0.85): the chaos game converges."""
    s = rng.uniform(0.25, 0.85, size=2)
    th1, th2 = rng.uniform(0, 2 * np.pi, size=2)
    flip = np.diag([1.0, rng.choice([-1.0, 1.0])])
    a = _rotation(th1) @ np.diag(s) @ flip @ _rotation(th2)
    return a, rng.uniform(-1, 1, size=2)


VARIATIONS = {
    "linear": lambda x, y, r2, th: (x, y),
    "sinusoidal": lambda x, y, r2, th: (np.sin(x), np.sin(y)),
    "spherical": lambda x, y, r2, th: (x / (r2 + 1e-6), y / (r2 + 1e-6)),
    "swirl": lambda x, y, r2, th: (x * np.sin(r2) - y * np.cos(r2),
                                   x * np.cos(r2) + y * np.sin(r2)),
    "horseshoe": lambda x, y, r2, th: ((x - y) * (x + y) / (np.sqrt(r2) + 1e-6),
                                       2 * x * y / (np.sqrt(r2) + 1e-6)),
    "polar": lambda x, y, r2, th: (th / np.pi, np.sqrt(r2) - 1),
    "handkerchief": lambda x, y, r2, th: (np.sqrt(r2) * np.sin(th + np.sqrt(r2)),
                                          np.sqrt(r2) * np.cos(th - np.sqrt(r2))),
    "heart": lambda x, y, r2, th: (np.sqrt(r2) * np.sin(th * np.sqrt(r2)),
                                   -np.sqrt(r2) * np.cos(th * np.sqrt(r2))),
}


def _chaos_game(rng, maps, probs, colours, size, variation=None, symmetry=1):
    """Iterate many points in parallel through randomly chosen maps; return (points, colour).

    ``maps`` are (A, t) affine pairs; ``variation`` optionally applies a non-linear flame
    variation after the affine part; ``symmetry`` > 1 adds random rotations by 2 pi k / symmetry.
    Colour follows the flame convention c <- (c + colour_of_map) / 2.
    """
    n_points = max(4000, size * size // 6)
    n_iter, warmup = 48, 12
    mats = np.stack([m[0] for m in maps])
    shifts = np.stack([m[1] for m in maps])
    p = rng.uniform(-1, 1, size=(n_points, 2))
    c = rng.uniform(0, 1, size=n_points)
    pts, cols = [], []
    for it in range(n_iter):
        k = rng.choice(len(maps), size=n_points, p=probs)
        p = np.einsum("nij,nj->ni", mats[k], p) + shifts[k]
        if variation is not None:
            x, y = p[:, 0], p[:, 1]
            vx, vy = variation(x, y, x * x + y * y, np.arctan2(y, x))
            p = np.stack([vx, vy], axis=1)
        if symmetry > 1:
            ang = 2 * np.pi * rng.integers(0, symmetry, size=n_points) / symmetry
            x, y = p[:, 0], p[:, 1]
            p = np.stack([np.cos(ang) * x - np.sin(ang) * y, np.sin(ang) * x + np.cos(ang) * y], 1)
        c = 0.5 * (c + colours[k])
        bad = ~np.isfinite(p).all(axis=1) | (np.abs(p).max(axis=1) > 1e4)
        p[bad] = rng.uniform(-1, 1, size=(int(bad.sum()), 2))
        if it >= warmup:
            pts.append(p.copy())
            cols.append(c.copy())
    return np.concatenate(pts), np.concatenate(cols)


def _render_density(points, colours, size, palette, rng) -> np.ndarray:
    """Frame the points (robust percentiles), histogram them, log-density tone map, colourise."""
    lo = np.percentile(points, 0.5, axis=0)
    hi = np.percentile(points, 99.5, axis=0)
    centre, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-6) * 1.08
    ij = ((points - centre) / half * 0.5 + 0.5) * size
    keep = (ij >= 0).all(axis=1) & (ij < size).all(axis=1)
    ij, colours = ij[keep].astype(np.int64), colours[keep]
    flat = ij[:, 1] * size + ij[:, 0]
    count = np.bincount(flat, minlength=size * size).astype(np.float64)
    csum = np.bincount(flat, weights=colours, minlength=size * size)
    mean_c = np.where(count > 0, csum / np.maximum(count, 1), 0.0)
    # Normalise by a high percentile, not the max: a few hot pixels would darken everything.
    ref = np.percentile(count[count > 0], 99.5) if (count > 0).any() else 1.0
    alpha = np.clip(np.log1p(count) / max(np.log1p(ref), 1e-6), 0, 1)
    alpha = alpha ** rng.uniform(0.45, 0.7)  # gamma lifts faint detail
    rgb = palette(mean_c) * alpha[:, None]
    return rgb.reshape(size, size, 3)


def _ifs_maps(rng, n_maps: int, symmetry: int, fill=(0.45, 0.9)):
    """Contractive maps scaled so that symmetry * sum|det| lies in ``fill``.

    A total area factor >= 1 makes the attractor fill a solid blob; well below it leaves dust.
    """
    maps = [_random_contractive_map(rng) for _ in range(n_maps)]
    total = symmetry * sum(abs(np.linalg.det(a)) for a, _ in maps)
    factor = np.sqrt(rng.uniform(*fill) / max(total, 1e-9))
    return [(a * min(factor, 0.9 / np.linalg.norm(a, 2)), t) for a, t in maps]


def _affine_ifs(rng, size):
    n_maps = int(rng.integers(2, 5))
    symmetry = int(rng.choice([1, 1, 1, 1, 2, 3, 4, 6]))
    maps = _ifs_maps(rng, n_maps, symmetry)
    dets = np.array([abs(np.linalg.det(a)) for a, _ in maps]) + 0.02
    pts, cols = _chaos_game(rng, maps, dets / dets.sum(), rng.uniform(0, 1, n_maps), size,
                            symmetry=symmetry)
    return _render_density(pts, cols, size, cosine_palette(rng), rng)


def _flame(rng, size):
    n_maps = int(rng.integers(2, 4))
    symmetry = int(rng.choice([1, 1, 2, 3, 4]))
    maps = _ifs_maps(rng, n_maps, symmetry, fill=(0.6, 1.2))
    name = rng.choice([k for k in VARIATIONS if k != "linear"])
    blend = rng.uniform(0.4, 1.0)
    variation = _blended(VARIATIONS[name], blend)
    probs = rng.dirichlet(np.ones(n_maps) * 2)
    pts, cols = _chaos_game(rng, maps, probs, rng.uniform(0, 1, n_maps), size,
                            variation=variation, symmetry=symmetry)
    return _render_density(pts, cols, size, cosine_palette(rng), rng)


def _blended(variation, weight: float):
    """(1 - weight) * linear + weight * variation, as flame transforms mix variations."""
    def blended(x, y, r2, th):
        vx, vy = variation(x, y, r2, th)
        return (1 - weight) * x + weight * vx, (1 - weight) * y + weight * vy
    return blended


def _escape_time(z, c, max_iter):
    """Smooth escape-time count per pixel (NaN where the orbit stays bounded).

    Only still-bounded orbits are iterated (the active set shrinks), which keeps deep
    iteration counts cheap.
    """
    shape = z.shape
    out = np.full(z.size, np.nan)
    idx = np.arange(z.size)
    z = z.ravel().copy()
    c = np.broadcast_to(c, shape).ravel().copy()
    for it in range(max_iter):
        z = z * z + c
        esc = np.abs(z) > 4.0
        if esc.any():
            out[idx[esc]] = it + 1 - np.log2(np.log(np.abs(z[esc])))
            keep = ~esc
            idx, z, c = idx[keep], z[keep], c[keep]
        if idx.size == 0:
            break
    return out.reshape(shape)


def _supersampled_grid(size: int, half: float, factor: int = 2) -> np.ndarray:
    """Complex pixel grid at factor x resolution; _box_down averages it back (anti-aliasing)."""
    ax = np.linspace(-half, half, size * factor)
    return ax[None, :] + 1j * ax[:, None]


def _box_down(rgb: np.ndarray, factor: int = 2) -> np.ndarray:
    h, w, ch = rgb.shape
    return rgb.reshape(h // factor, factor, w // factor, factor, ch).mean(axis=(1, 3))


def _julia(rng, size):
    theta = rng.uniform(0, 2 * np.pi)
    cardioid = 0.5 * np.exp(1j * theta) - 0.25 * np.exp(2j * theta)
    c = cardioid * rng.uniform(1.0, 1.06)  # just outside the main cardioid: rich filaments
    z = _supersampled_grid(size, rng.uniform(1.1, 1.6)) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    return _box_down(_colour_escape(_escape_time(z, c, 120), rng))


def _mandelbrot(rng, size):
    # Zoom onto a boundary point: a point of the main cardioid or period-2 disc edge.
    theta = rng.uniform(0, 2 * np.pi)
    if rng.uniform() < 0.7:
        centre = 0.5 * np.exp(1j * theta) - 0.25 * np.exp(2j * theta)
        outward = np.exp(1j * theta) - np.exp(2j * theta)
    else:
        centre = -1 + 0.25 * np.exp(1j * theta)
        outward = np.exp(1j * theta)
    half = 10 ** rng.uniform(-2.2, -0.8)
    # Step outwards so the black interior does not swallow half of the picture.
    centre = centre + 0.5 * half * outward / max(abs(outward), 1e-9)
    c = centre + _supersampled_grid(size, half)
    return _box_down(_colour_escape(_escape_time(np.zeros_like(c), c, 200), rng))


def _colour_escape(n_esc: np.ndarray, rng) -> np.ndarray:
    """Colour escaped pixels by log escape time; bounded (interior) pixels stay black."""
    t = np.log1p(np.nan_to_num(n_esc, nan=0.0))
    inside = np.isnan(n_esc)
    finite = t[~inside]
    if finite.size:
        t = (t - finite.min()) / max(finite.max() - finite.min(), 1e-6)
    rgb = cosine_palette(rng)(t * rng.uniform(1.0, 2.5))
    shade = np.clip(t * 1.4, 0, 1) ** 0.6  # dim the far field so the set's edge stands out
    rgb = rgb * shade[..., None]
    rgb[inside] = 0.0
    return rgb


FRACTAL_FAMILIES = {"affine_ifs": _affine_ifs, "flame": _flame, "julia": _julia,
                    "mandelbrot": _mandelbrot}


def _coverage(rgb: np.ndarray) -> float:
    return float((rgb.max(axis=-1) > 0.08).mean())


def fractal_image(rng: np.random.Generator, size: int = 256,
                  family: Optional[str] = None) -> np.ndarray:
    """One colourful fractal picture, uint8 [size, size, 3] on a dark background.

    The family (random affine IFS, flame with a non-linear variation, Julia or Mandelbrot
    escape time) is drawn from ``rng`` unless given. Degenerate draws (almost empty or almost
    fully covered pictures) are redrawn, up to a few times.
    """
    if size < 16:
        raise ValueError(f"fractal size must be >= 16, got {size}")
    names = list(FRACTAL_FAMILIES)
    if family is not None and family not in FRACTAL_FAMILIES:
        raise ValueError(f"unknown fractal family {family!r}; choose from {names}")
    name = family or names[int(rng.integers(len(names)))]
    for _ in range(8):
        rgb = FRACTAL_FAMILIES[name](rng, size)
        if 0.06 <= _coverage(rgb) <= 0.92:
            break
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_fractals(out_dir, n: int = 64, size: int = 256, seed: int = 0,
                  progress: bool = True) -> List[Path]:
    """Write ``n`` fractal PNGs ``out_dir/fractal_<i:05d>.png``; picture i uses seed (seed, i)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(n), desc="fractals", disable=not progress):
        pixels = fractal_image(np.random.default_rng([seed, i]), size=size)
        path = out_dir / f"fractal_{i:05d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
