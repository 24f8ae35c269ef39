"""Data for the self-check: generated once per run into the work folder, or the user's.

Every generator writes a `.done` marker last, so a child that was stopped half-way leaves a
folder the next child regenerates. The user's `--data` tree is sampled (a few pictures from each
of the first class folders, without listing the whole tree) and `--mixing` is a folder or a
saved `.npy` bank.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from dali_pixmix.check.settings import Settings

# JPEG flavours the decoders must agree on: (name, PIL mode, save options).
JPEG_KINDS = (
    ("baseline_420", "RGB", dict(quality=90, subsampling=2)),
    ("baseline_422", "RGB", dict(quality=90, subsampling=1)),
    ("baseline_444", "RGB", dict(quality=95, subsampling=0)),
    ("progressive", "RGB", dict(quality=90, progressive=True)),
    ("grayscale", "L", dict(quality=90)),
    ("cmyk", "CMYK", dict(quality=90)),
)
JPEG_SIZES = ((203, 301), (256, 256), (375, 500))  # odd sizes: partial MCUs at the borders


def _fresh(folder: Path) -> bool:
    """True when `folder` holds a finished set; else empties it for regeneration."""
    if (folder / ".done").is_file():
        return True
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return False


def _finish(folder: Path) -> Path:
    (folder / ".done").write_text("ok\n")
    return folder


# ----------------------------------------------------------------------------- generated sets
def imagenet_tree(s: Settings) -> Path:
    """`<root>/{train,val}/<wnid>/*.JPEG` of synthetic object pictures."""
    from dali_pixmix.data.synthetic import make_synthetic_imagenet

    low, high = s.image_size
    return make_synthetic_imagenet(s.workdir / "imagenet", num_classes=s.classes,
                                   train_per_class=s.train_per_class,
                                   val_per_class=s.val_per_class, seed=0, min_size=low,
                                   max_size=high, progress=False)


def jpeg_variants(s: Settings) -> List[Path]:
    """Every `JPEG_KINDS` flavour at every `JPEG_SIZES` size, named `<kind>_<h>x<w>.jpg`."""
    from PIL import Image

    from dali_pixmix.data.synthetic import synthetic_object_image

    folder = s.workdir / "jpeg_variants"
    if not _fresh(folder):
        rng = np.random.default_rng(0)
        for i, (h, w) in enumerate(JPEG_SIZES):
            picture = Image.fromarray(synthetic_object_image(i, rng, h, w))
            for kind, mode, options in JPEG_KINDS:
                picture.convert(mode).save(folder / f"{kind}_{h}x{w}.jpg", **options)
        _finish(folder)
    return sorted(folder.glob("*.jpg"))


def picture_pool(size: int, n_images: int, n_mixing: int, seed: int):
    """uint8 numpy pools of synthetic object pictures and fractal mixing pictures, each
    [n, size, size, 3]."""
    from dali_pixmix.data.synthetic import synthetic_object_image
    from dali_pixmix.mixing.fractals import fractal_image

    rng = np.random.default_rng(seed)
    images = np.stack([synthetic_object_image(i, rng, size, size) for i in range(n_images)])
    mixing = np.stack([fractal_image(rng, size) for _ in range(n_mixing)])
    return images, mixing


def write_h264_videos(folder: Path, count: int, frames: int, size: int,
                      classes: Sequence[str]) -> None:
    """`count` H.264 MP4s (yuv420p, like ImageNet-P) of moving noisy gradients, encoded with
    PyAV's libx264, as `<folder>/<wnid>/v<i>.mp4` cycling over `classes`."""
    import av

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size, dtype=np.float32)[None, :, None]
    for i in range(count):
        path = folder / classes[i % len(classes)] / f"v{i}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            for t in range(frames):
                img = np.roll(ramp + rng.normal(0, 12, (size, size, 3)), t, axis=1)
                img = np.clip(img, 0, 255).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())


def video_folder(s: Settings) -> Path:
    """A perturbation-like folder `<wnid>/v<i>.mp4` of `s.videos` H.264 videos."""
    from dali_pixmix.check.harness import Skip, require
    from dali_pixmix.classes import imagenet_wnids

    av = require("av", "PyAV")
    try:
        av.codec.Codec("libx264", "w")
    except Exception as err:  # noqa: BLE001 - an FFmpeg build without the encoder
        raise Skip("PyAV's FFmpeg has no libx264 encoder: the H.264 test videos cannot be "
                   "made") from err
    folder = s.workdir / "videos"
    if not _fresh(folder):
        write_h264_videos(folder, s.videos, s.video_frames, s.video_size,
                          imagenet_wnids()[:s.classes])
        _finish(folder)
    return folder


# ----------------------------------------------------------------------------- user data
def _image_names(folder: Path) -> List[str]:
    """The pictures lying directly in `folder` (the package's rule for an image name)."""
    from dali_pixmix.data.images import is_image_name

    return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_name(e.name))


def sample_class_tree(root: str | Path, count: int, classes: int = 100
                      ) -> Tuple[List[str], List[int]]:
    """About `count` pictures (files, labels) from the first `classes` class folders of `root`,
    the same number from each, without listing the whole tree (ImageNet has 1.28 M files)."""
    from dali_pixmix.data.images import subfolders

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} is not a folder of class sub-folders")
    folders = subfolders(root)[:classes]
    if not folders:
        raise ValueError(f"--data {root} has no class sub-folders")
    per_class = max(1, -(-count // len(folders)))
    files, labels = [], []
    for label, folder in enumerate(folders):
        names = _image_names(folder)[:per_class]
        files += [str(folder / n) for n in names]
        labels += [label] * len(names)
    if not files:
        raise ValueError(f"--data {root}: its class folders hold no pictures")
    return files[:count], labels[:count]


def training_files(s: Settings, count: int) -> Tuple[List[str], List[int]]:
    """(files, labels) for a training pipeline: the user's tree or the generated one."""
    if s.data:
        return sample_class_tree(s.data, count)
    return sample_class_tree(imagenet_tree(s) / "train", count, s.classes)


def evaluation_files(s: Settings, count: int) -> List[str]:
    if s.data:
        return sample_class_tree(s.data, count)[0]
    return sample_class_tree(imagenet_tree(s) / "val", count, s.classes)[0]


def mixing_bank(s: Settings, device: str):
    """The mixing bank on `device`: the user's `.npy` or folder (first `mixing_count` pictures,
    decoded at `bank_size` by DALI) or generated fractals. The generated bank needs no DALI: it
    is rendered once, saved as a `.npy` and loaded the way training loads a cached bank."""
    import torch

    from dali_pixmix.mixing.bank import MixingBank

    if s.mixing and Path(s.mixing).suffix == ".npy":
        return MixingBank.load(s.mixing, device=device)
    if s.mixing:
        from dali_pixmix.check.harness import require
        from dali_pixmix.data.images import scan_images

        require("nvidia.dali", "DALI", s.on_cuda)
        files = scan_images(s.mixing)[:s.mixing_count]
        return MixingBank.from_files(files, s.bank_size, device=device, source=s.mixing)
    path = s.workdir / f"fractal_bank_{s.mixing_count}x{s.bank_size}.npy"
    if not path.is_file():
        pictures = torch.from_numpy(fractal_pictures(s.mixing_count, s.bank_size))
        MixingBank(pictures, source="generated fractals").save(path)
    return MixingBank.load(path, device=device)


def fractal_pictures(count: int, size: int) -> np.ndarray:
    """uint8 [count, size, size, 3]: the pictures `make_fractals` would write (seed 0)."""
    from dali_pixmix.mixing.fractals import fractal_image

    return np.stack([fractal_image(np.random.default_rng([0, i]), size) for i in range(count)])

