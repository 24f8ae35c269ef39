"""Contact sheets: many pictures tiled into one PNG for a quick visual check."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

MAX_TILES = 64


def contact_sheet(images: Sequence[np.ndarray], columns: int = 8, cell: int = 128) -> np.ndarray:
    """Tile images (resized to cell x cell) into one uint8 picture for a quick visual check."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    rows = math.ceil(len(images) / columns)
    sheet = np.zeros((rows * cell, columns * cell, 3), dtype=np.uint8)
    for k, img in enumerate(images):
        tile = np.asarray(Image.fromarray(img).convert("RGB").resize((cell, cell), Image.BILINEAR))
        r, c = divmod(k, columns)
        sheet[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = tile
    return sheet


def write_contact_sheet(files: Sequence[str | Path], path: str | Path, cell: int = 128) -> Path:
    """A PNG of up to `MAX_TILES` of the picture `files`, evenly sampled, 8 per row (parents
    created)."""
    step = max(1, len(files) // MAX_TILES)
    tiles = [np.asarray(Image.open(f).convert("RGB")) for f in list(files)[::step][:MAX_TILES]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(tiles, columns=min(8, len(tiles)), cell=cell)).save(path)
    return path
