"""Cutout: patch size, clipping, fill (zero after normalisation) and the law of the centre,
checked on the output itself."""
import numpy as np
import pytest
import torch
from stats import chi2_uniform_ok

from dali_pixmix.augment.cutout import cutout, cutout_boxes
from dali_pixmix.augment.pixmix import Normalized

pytestmark = pytest.mark.unit

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def images(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(1, 256, (n, h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("layout, dtype", [("HWC", torch.float32), ("CHW", torch.float32),
                                           ("CHW", torch.float16)])
def test_the_patch_is_zero_after_normalisation_and_the_rest_is_normalised(layout, dtype):
    x = images(64, 20, 24)
    fmt = Normalized(MEAN, STD, layout, dtype)
    out, boxes = cutout(x, 10, gen(0), output=fmt, trace=True)
    hwc = out.permute(0, 2, 3, 1) if layout == "CHW" else out
    normalised = ((x.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).to(dtype)
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        inside = torch.zeros(20, 24, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert bool((hwc[i][inside] == 0).all())
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert torch.allclose(hwc[i][~inside].float(), normalised[i][~inside].float(), atol=tol)
        assert bool((hwc[i][~inside] != 0).all())  # inputs are >= 1: nothing else is zeroed


def test_patch_side_clipping_and_uniform_centre():
    h, w, size = 12, 16, 8
    x = images(6000, h, w)
    out = cutout(x, size, gen(1))  # [0, 1] HWC: the patch is black (the inputs are >= 1)
    zero = (out == 0).all(dim=-1)
    rows, cols = zero.any(dim=2), zero.any(dim=1)
    centres_y, centres_x = [], []
    for r, c, z in zip(rows, cols, zero):
        ys, xs = r.nonzero()[:, 0], c.nonzero()[:, 0]
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        assert bool(z[y0:y1, x0:x1].all()) and int(z.sum()) == (y1 - y0) * (x1 - x0)
        # the side is the full size unless the square crosses the border
        assert y1 - y0 == size or y0 == 0 or y1 == h
        assert x1 - x0 == size or x0 == 0 or x1 == w
        # the square is [c - size // 2, c + size // 2): recover the centre from a free edge
        centres_y.append(y0 + size // 2 if y0 > 0 else y1 - size // 2)
        centres_x.append(x0 + size // 2 if x0 > 0 else x1 - size // 2)
    assert chi2_uniform_ok(centres_y, h) and chi2_uniform_ok(centres_x, w)


def test_boxes_are_seeded_and_checked():
    assert torch.equal(cutout_boxes(5, 10, 10, 4, gen(2)), cutout_boxes(5, 10, 10, 4, gen(2)))
    assert not torch.equal(cutout_boxes(50, 10, 10, 4, gen(2)), cutout_boxes(50, 10, 10, 4, gen(3)))
    with pytest.raises(ValueError, match=">= 1 pixel"):
        cutout_boxes(1, 4, 4, 0)
    with pytest.raises(ValueError, match="uint8"):
        cutout(torch.zeros(1, 4, 4, 3), 2)
