"""The batched PixMix ops against PIL, one image at a time, on natural-looking pictures."""
import contextlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps, ImageStat
from scenes import scene
from torch.overrides import TorchFunctionMode

from dali_pixmix.augment import ops as A
from dali_pixmix.augment.pixmix._dense_ops import row_histograms
from dali_pixmix.augment.pixmix.dense import apply_ops

pytestmark = pytest.mark.unit


def dense_apply(x: torch.Tensor, op: str, param=None) -> torch.Tensor:
    """``A.apply_op`` by the dense strategy's kernels (every sample's op in one batch)."""
    n = x.shape[0]
    params = torch.zeros(n) if param is None else torch.as_tensor(param).reshape(n)
    return apply_ops(x, torch.full((n,), A.ALL_OPS.index(op)), params.double())


APPLY = {"grouped": A.apply_op, "dense": dense_apply}

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def pil_param(op, rng, w, h):
    """A parameter as PixMix draws it, over the whole severity range (levels up to 10)."""
    level, sign = rng.uniform(0.1, 10), (-1 if rng.random() < 0.5 else 1)
    return {
        "autocontrast": None, "equalize": None,
        "posterize": 4 - int(level * 4 / 10), "solarize": 256 - int(level * 256 / 10),
        "rotate": int(level * 30 / 10) * sign,
        "shear_x": level * 0.3 / 10 * sign, "shear_y": level * 0.3 / 10 * sign,
        "translate_x": int(level * w / 3 / 10) * sign,
        "translate_y": int(level * h / 3 / 10) * sign,
    }.get(op, level * 1.8 / 10 + 0.1)


def pil_apply(img: np.ndarray, op: str, p) -> np.ndarray:
    im = Image.fromarray(img)
    affine = {"shear_x": (1, p, 0, 0, 1, 0), "shear_y": (1, 0, 0, p, 1, 0),
              "translate_x": (1, 0, p, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, p)}
    if op in affine:
        out = im.transform(im.size, Image.AFFINE, affine[op], resample=Image.BILINEAR)
    elif op == "rotate":
        out = im.rotate(p, resample=Image.BILINEAR)
    elif op in ("autocontrast", "equalize"):
        out = getattr(ImageOps, op)(im)
    elif op in ("posterize", "solarize"):
        out = getattr(ImageOps, op)(im, p)
    else:
        out = getattr(ImageEnhance, op.capitalize())(im).enhance(p)
    return np.asarray(out)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(7)
    return np.stack([scene(rng, 29, 37) for _ in range(4)])


def test_op_lists_follow_the_spec_order():
    assert A.OPS == ("autocontrast", "equalize", "posterize", "rotate", "solarize",
                     "shear_x", "shear_y", "translate_x", "translate_y")
    assert A.ALL_OPS == A.OPS + ("color", "contrast", "brightness", "sharpness")


@pytest.mark.parametrize("strategy", APPLY)
@pytest.mark.parametrize("op", A.ALL_OPS)
def test_op_matches_pil(op, batch, strategy):
    rng = np.random.default_rng(A.ALL_OPS.index(op))
    n, h, w, _ = batch.shape
    for _ in range(2):
        params = [pil_param(op, rng, w, h) for _ in range(n)]
        tensor_params = None if params[0] is None else torch.tensor(params)
        out = APPLY[strategy](torch.from_numpy(batch), op, tensor_params)
        assert out.dtype == torch.uint8 and out.shape == batch.shape
        ref = np.stack([pil_apply(batch[i], op, params[i]) for i in range(n)])
        diff = np.abs(out.numpy().astype(int) - ref)
        if op in GEOMETRIC:
            # float32 coordinates vs PIL's float64: a value landing next to an integer may
            # truncate the other way, never by more than one level.
            assert diff.max() <= 1, (op, params)
            assert (diff > 0).mean() < 0.002, (op, params)
        else:
            assert diff.max() == 0, (op, params)


@pytest.mark.parametrize("strategy", APPLY)
def test_posterize_and_solarize_every_value_and_setting(strategy):
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    x = torch.from_numpy(ramp).unsqueeze(0).repeat(9, 1, 1, 1)
    bits = torch.arange(9)  # 0..8 kept bits
    out = APPLY[strategy](x, "posterize", bits).numpy()
    for i in range(1, 9):
        assert np.array_equal(out[i], np.asarray(ImageOps.posterize(Image.fromarray(ramp), i)))
    assert out[0].max() == 0
    thresholds = torch.tensor([0, 1, 128, 254, 255, 256, 7, 200, 231])
    out = APPLY[strategy](x, "solarize", thresholds).numpy()
    for i, t in enumerate(thresholds.tolist()):
        assert np.array_equal(out[i], np.asarray(ImageOps.solarize(Image.fromarray(ramp), t)))


@pytest.mark.parametrize("strategy", APPLY)
def test_histogram_ops_degenerate_channels_match_pil(strategy):
    rng = np.random.default_rng(3)
    img = scene(rng, 20, 20)
    img[..., 0] = 77                      # flat channel: both ops leave it alone
    img[..., 1] = np.where(img[..., 1] > 128, 200, 10)  # two levels
    tiny = scene(rng, 20, 20)
    tiny[:, :] = tiny[0, 0]
    tiny[0, :3] = (0, 128, 255)           # step == 0 for equalize (3 odd pixels of 400)
    x = torch.from_numpy(np.stack([img, tiny]))
    for op in ("autocontrast", "equalize"):
        out = APPLY[strategy](x, op).numpy()
        for i, im in enumerate((img, tiny)):
            assert np.array_equal(out[i], pil_apply(im, op, None)), op


@pytest.mark.parametrize("strategy", APPLY)
def test_geometry_conventions_by_hand(strategy):
    img = np.zeros((1, 21, 21, 3), np.uint8)
    img[0, 10, 16] = 255                  # a dot right of the centre (10.5, 10.5)
    x = torch.from_numpy(img)
    apply = APPLY[strategy]
    # Positive degrees rotate counter-clockwise: the dot goes up (smaller row), not down.
    rot = apply(x, "rotate", torch.tensor([90]))[0, ..., 0].numpy()
    assert rot[4:6, 10].max() > 200 and rot[15:17, 10].max() == 0
    # translate_x by t shows input column x + t at x; uncovered columns are black.
    t = apply(x, "translate_x", torch.tensor([3]))[0, ..., 0].numpy()
    assert t[10, 13] == 255 and t[:, -3:].max() == 0 and t.sum() == 255
    t = apply(x, "translate_y", torch.tensor([-2]))[0, ..., 0].numpy()
    assert t[12, 16] == 255 and t[:2].max() == 0
    for op in ("shear_x", "shear_y", "translate_x", "rotate"):  # a zero parameter is identity
        assert torch.equal(apply(x, op, torch.tensor([0])), x), op
    identity = A.affine(x, torch.tensor([[1.0, 0, 0, 0, 1, 0]]))
    assert torch.equal(identity, x)


def test_whole_pixel_shortcuts_are_the_general_resampling_bit_for_bit(batch):
    """Translation by whole pixels (one slice copy per offset) and rotation by multiples of 360
    degrees (a copy) give what the general per-line / bilinear resampling gives."""
    x = torch.from_numpy(batch)
    n, h, w, _ = x.shape
    for t in ([0, 3, -7, 2], [w, -w - 4, 1, 1], [-1, -1, -1, -1]):
        shift = torch.tensor(t, dtype=torch.float64)
        assert torch.equal(A.translate_x(x, shift),
                           A._shift_along(x, shift.view(n, 1).expand(n, h), "x")), t
        assert torch.equal(A.translate_y(x, shift),
                           A._shift_along(x, shift.view(n, 1).expand(n, w), "y")), t
    turns = A.rotate(x, torch.tensor([0.0, 360.0, -720.0, 90.0]))
    identity_plan = A._bilinear_plan(A._IDENTITY, h, w, x.device)
    general = A._bilinear_apply(x.reshape(n, h * w, 3), *identity_plan).view(n, h, w, 3)
    assert torch.equal(turns[:3], general[:3]) and torch.equal(general, x)
    assert not torch.equal(turns[3], x[3])


def test_ops_keep_input_and_validate_parameters(batch):
    x = torch.from_numpy(batch.copy())
    before = x.clone()
    for op in A.ALL_OPS:
        param = None if op in ("autocontrast", "equalize") else torch.full((4,), 2)
        A.apply_op(x, op, param)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match="one parameter per sample"):
        A.posterize(x, torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="uint8"):
        A.equalize(x.float())
    with pytest.raises(ValueError, match="unknown op"):
        A.apply_op(x, "blur", None)


@pytest.mark.parametrize("strategy", APPLY)
def test_every_op_takes_an_empty_batch(strategy):
    x = torch.zeros((0, 5, 6, 3), dtype=torch.uint8)
    for op in A.ALL_OPS:
        out = APPLY[strategy](x, op, None if op in ("autocontrast", "equalize") else [])
        assert out.shape == x.shape and out.dtype == torch.uint8, op


class ReciprocalDivision(TorchFunctionMode):
    """CUDA's rule for a tensor divided by a Python number (a multiply by the reciprocal),
    applied on the CPU, where torch divides exactly."""

    DIVISIONS = (torch.Tensor.__truediv__, torch.Tensor.div, torch.div, torch.true_divide)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func in self.DIVISIONS and len(args) == 2 and isinstance(args[1], (int, float))
                and kwargs.get("rounding_mode") is None):
            return args[0] * (1.0 / args[1])
        return func(*args, **kwargs)


@pytest.mark.parametrize("h, w, total", [(7, 14, 147), (14, 23, 1127), (22, 17, 5797),
                                         (2, 1, 1), (4, 4, 24)])
def test_mean_grey_rounds_exact_ties_as_pil_whatever_the_division(h, w, total):
    """ImageEnhance.Contrast's grey level is int(mean + 0.5); these sums give means of exactly
    x.5, which a float mean computed as sum * (1 / HW) (CUDA's division) rounds down."""
    values = np.zeros(h * w, np.uint8)
    values[:total // 255] = 255
    values[total // 255] = total % 255
    grey = Image.fromarray(values.reshape(h, w))
    expected = int(ImageStat.Stat(grey).mean[0] + 0.5)
    assert (2 * total) % (h * w) == 0 and (2 * total // (h * w)) % 2 == 1  # a .5 tie
    luma = torch.from_numpy(values.astype(np.float32)).view(1, h, w, 1)
    for rule in (contextlib.nullcontext(), ReciprocalDivision()):
        with rule:
            assert A.mean_grey(luma).item() == expected
    rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
    out = A.contrast(torch.from_numpy(rgb[None]), 0.3)[0].numpy()
    assert np.array_equal(out, np.asarray(ImageEnhance.Contrast(Image.fromarray(rgb))
                                          .enhance(0.3)))


def test_dense_histograms_are_exact_int32_counts():
    """The dense strategy counts values in int32 (a count is at most H * W); the counts equal
    numpy's, a flat channel's count being the whole image."""
    rng = np.random.default_rng(5)
    images = np.stack([scene(rng, 23, 31) for _ in range(3)])
    images[1, ..., 2] = 9  # every pixel of a channel in one bin
    x = torch.from_numpy(images)
    index = (x.int() + torch.arange(3, dtype=torch.int32) * 256
             + torch.arange(3, dtype=torch.int32).view(3, 1, 1, 1) * 768).view(-1)
    hist = row_histograms(index, 3)
    assert hist.dtype == torch.int32 and hist.shape == (3, 3, 256)
    for i in range(3):
        for c in range(3):
            expected = np.bincount(images[i, ..., c].ravel(), minlength=256)
            assert np.array_equal(hist[i, c].numpy(), expected)
    assert int(hist[1, 2, 9]) == 23 * 31

