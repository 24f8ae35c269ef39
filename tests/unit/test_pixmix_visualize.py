"""tools/visualize_pixmix.py: grid layout, folder input, generated input, clear errors."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.unit

TOOL = Path(__file__).resolve().parents[2] / "tools" / "visualize_pixmix.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("visualize_pixmix", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_pictures(folder: Path, n: int, size, seed: int):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        yy, xx = np.mgrid[0:size[1], 0:size[0]]
        img = np.stack([(xx * (i + 3) + yy) % 256, (yy * 5) % 256, np.full_like(xx, 40 * i)], -1)
        img[rng.integers(size[1]), :] = 255
        Image.fromarray(img.astype(np.uint8)).save(folder / f"p{i}.png")


def test_grid_from_folders(tool, tmp_path):
    write_pictures(tmp_path / "imgs", 3, (48, 40), 0)
    write_pictures(tmp_path / "mix" / "sub", 2, (50, 50), 1)
    out = tmp_path / "grid.png"
    rc = tool.main(["--images", str(tmp_path / "imgs"), "--mixing", str(tmp_path / "mix"),
                    "--rows", "2", "--draws", "3", "--size", "32", "--out", str(out)])
    assert rc == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 32 + 4, 4 * 32 + 3 * 4, 3)
    # First column: the originals, shorter side resized to 32 then centre-cropped (PIL here).
    for row, name in enumerate(["p0.png", "p1.png"]):
        im = Image.open(tmp_path / "imgs" / name).convert("RGB").resize((38, 32), Image.BILINEAR)
        want = np.asarray(im.crop((3, 0, 35, 32)))
        assert np.array_equal(grid[row * 36:row * 36 + 32, :32], want)
    assert (grid[32:36] == 255).all()  # white gap between rows


def test_generated_inputs_and_errors(tool, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert tool.main(["--rows", "1", "--draws", "2", "--size", "24", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (24, 3 * 24 + 2 * 4, 3)
    assert "1 images x 2 PixMix draws" in capsys.readouterr().out
    assert tool.main(["--images", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert tool.main(["--mixing", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no" in capsys.readouterr().err
