"""EXIF orientation tags are ignored everywhere, as PIL/torchvision (the papers' protocol) do.

A JPEG whose EXIF says "rotate 90 degrees" is decoded as stored by PIL's `Image.open`; the
evaluation graph, the training graph and the mixing bank must see the same pixel grid, with the
CPU decoders and (when CUDA exists) with nvJPEG (`mixed`).
"""
import numpy as np
import pytest
from PIL import Image
from scenes import scene

from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.pipelines.graphs import eval_pipeline, train_pipeline

pytestmark = pytest.mark.integration

ROTATE_90 = 6  # EXIF Orientation: the stored picture must be turned 90 degrees clockwise
DEVICES = pytest.mark.parametrize("device_id", [None, pytest.param(0, marks=pytest.mark.gpu)],
                                  ids=["cpu", "gpu"])


def host_array(batch) -> np.ndarray:
    return np.array((batch.as_cpu() if hasattr(batch, "as_cpu") else batch).as_tensor())


def save_with_orientation(path, pixels, orientation=ROTATE_90):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, format="JPEG", quality=100, subsampling=0, exif=exif)
    assert Image.open(path).getexif()[0x0112] == orientation
    return path


def pil_resize_centre_crop(path, resize, crop):
    """torchvision Resize(resize) + CenterCrop(crop) + Normalize on PIL's decode (no EXIF)."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    img = img.resize(size, Image.BILINEAR)
    top, left = int(round((size[1] - crop) / 2.0)), int(round((size[0] - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255
    return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


@DEVICES
def test_evaluation_decodes_the_stored_grid_like_pil(tmp_path, device_id):
    path = save_with_orientation(tmp_path / "rotated.jpg",
                                 scene(np.random.default_rng(0), 48, 80))
    pipe = eval_pipeline(files=[path], labels=[0], batch_size=1, resize=40, crop=32,
                         device_id=device_id)
    images, _ = pipe.run()
    diff = np.abs(host_array(images)[0] - pil_resize_centre_crop(path, 40, 32))
    assert diff.max() < 0.05 and diff.mean() < 0.01  # a rotated decode differs by ~1 on average


@DEVICES
def test_mixing_bank_decodes_the_stored_grid_like_pil(tmp_path, device_id):
    pixels = scene(np.random.default_rng(1), 48, 80)
    path = save_with_orientation(tmp_path / "rotated.jpg", pixels)
    bank = MixingBank.from_files([path], size=48,
                                 device="cpu" if device_id is None else f"cuda:{device_id}")
    stored = np.asarray(Image.open(path).convert("RGB"))[:, 16:64]  # centre 48 x 48
    diff = np.abs(bank.images[0].cpu().numpy().astype(int) - stored.astype(int))
    assert diff.mean() < 3


@DEVICES
def test_training_crops_keep_the_stored_orientation(tmp_path, device_id):
    """Top half red, bottom half blue, stored with a 90-degree EXIF tag: every random-resized
    crop of the stored grid is constant along each row (a rotated decode is not)."""
    pixels = np.zeros((48, 80, 3), np.uint8)
    pixels[:24, :, 0] = 255
    pixels[24:, :, 2] = 255
    path = save_with_orientation(tmp_path / "halves.jpg", pixels)
    crops = []
    for seed in range(3):
        pipe = train_pipeline(files=[path] * 16, labels=[0] * 16, batch_size=16, crop=32,
                              seed=seed, random_shuffle=False, layout="HWC",
                              device_id=device_id)
        crops.append(host_array(pipe.run()[0]))
    crops = np.concatenate(crops)  # [48, 32, 32, 3], normalised
    along_rows = np.ptp(crops, axis=2).max()  # largest change inside any row
    along_columns = np.ptp(crops, axis=1).max()
    assert along_columns > 3  # some crops show the red/blue edge (about 4.4 in these units)
    assert along_rows < 0.5
