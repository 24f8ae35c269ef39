"""Files that look like images but cannot be decoded, as real datasets contain them."""
from pathlib import Path

import numpy as np
from PIL import Image


def random_bytes(path: Path, size: int = 5000, seed: int = 0) -> Path:
    """A `.JPEG` that is random bytes (no image header at all): DALI 2.4 crashes on it in a
    batch of 32 or more."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
                     .tobytes())
    return path


def cut_after_header(path: Path, size: int = 64, seed: int = 0) -> Path:
    """A JPEG cut 40 bytes into its scan: the header parses (PIL opens it, DALI sizes it), the
    pixels cannot be decoded (a truncated download)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\xff\xda") + 40])  # SOS marker + a little data
    return path
