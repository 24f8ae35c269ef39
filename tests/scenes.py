"""Natural-looking test images for op faithfulness tests: smooth gradients plus flat discs.

Uniform noise would hide resampling and histogram bugs; these scenes have the smooth regions and
sharp edges of real photographs."""
import numpy as np


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradients plus a few flat discs: uint8 [h, w, 3]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3))
    for c in range(3):
        fx, fy, phase = rng.uniform(0.3, 2.0, 3)
        img[..., c] = 128 + 90 * np.sin(2 * np.pi * fx * xx / w + phase) \
            * np.cos(2 * np.pi * fy * yy / h)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, w / 3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def scenes(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """A seeded batch of `scene`s: uint8 [n, h, w, 3]."""
    rng = np.random.default_rng(seed)
    return np.stack([scene(rng, h, w) for _ in range(n)])
