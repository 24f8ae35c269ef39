"""DALI pipelines for training (random-resized-crop + flip + a per-image method) and evaluation.

One code path with a device switch: `device_id=None` builds a CPU-only pipeline (CPU decoders and
operators, used by tests and CI); an integer `device_id` decodes with nvJPEG (`mixed`) and runs
every operator, the per-image stage included, on that GPU. The training graph's per-image
method is a batch-level torch stage (`pipelines.stage`: PixMix, AugMix, Cutout) or DALI's own
AutoAugment (`nvidia.dali.auto_aug`, ImageNet policy).

Conventions: readers are named "Reader" (iterators size epochs from it); `shard_id` is the GLOBAL
rank and `num_shards` the world size; outputs are `(images, labels)` with images normalised by the
ImageNet mean/std as float32 or float16, layout CHW or HWC (HWC feeds channels_last models), and
labels int32 `[B, 1]`. The training graph after the reader (`_augment`) is shared by the
reader-fed `train_pipeline` (tools, checks, benchmarks) and `stream_train_pipeline`, which a
training run builds once and feeds with its own data order through an external source.
CIFAR training (`array_train_pipeline`) is fed the pictures themselves from memory and runs the
reference's CIFAR recipe instead (random crop with zero padding + flip, the same per-image
methods, CIFAR's mean = std = 0.5).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Optional, Sequence

from dali_pixmix.data.cifar import CIFAR_MEAN, CIFAR_STD
from dali_pixmix.data.decoding import (
    ADJUST_ORIENTATION,
    HW_DECODER_LOAD,
    TRAIN_DECODER_PADDING,
    decoder_args,
)
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD, check_layout, dali_dtype
from dali_pixmix.seeds import derive_seed

if TYPE_CHECKING:
    from dali_pixmix.pipelines.stage import BatchStage


RRC_ASPECT = (3.0 / 4.0, 4.0 / 3.0)  # torchvision RandomResizedCrop defaults
RRC_AREA = (0.08, 1.0)
# AutoAugment's ImageNet policy translates by up to 150/331 of the image (the AutoAugment paper:
# 150 px on 331 px pictures; torchvision's relative setting), whatever the crop size.
AUTOAUGMENT_MAX_TRANSLATE = 150.0 / 331.0
# AutoAugment's CIFAR policy (found on reduced CIFAR-10) translates by up to 10 px of a 32 px
# picture, as the AutoAugment authors' CIFAR code does.
CIFAR_AUTOAUGMENT_MAX_TRANSLATE = 10.0 / 32.0
# The reference's CIFAR training crop: RandomCrop(32, padding=4), zero padding.
CIFAR_PADDING = 4


# --------------------------------------------------------------------------- graph pieces
def random_crop_decoder_args(gpu: bool, hw_decoder_load: float = HW_DECODER_LOAD) -> dict:
    """Keyword arguments of the training decoder, `fn.decoders.image_random_crop`: an ROI
    decode (`decoder_args(roi=True)`) with the training preallocation, RGB output and
    torchvision's RandomResizedCrop ranges."""
    from nvidia.dali import types

    return dict(decoder_args(gpu, TRAIN_DECODER_PADDING, roi=True,
                             hw_decoder_load=hw_decoder_load),
                output_type=types.RGB, random_aspect_ratio=list(RRC_ASPECT),
                random_area=list(RRC_AREA), num_attempts=100)


def _reader(*, file_root, file_list, files, labels, shard_id, num_shards, shuffle):
    """fn.readers.file named "Reader", padded so every rank runs the same number of batches."""
    from nvidia.dali import fn

    if file_root is not None and file_list is None and files is None:
        # A class-folder root is listed by the package's discovery rule (any depth, hidden files
        # skipped), never by DALI's own scan, which reads only the top level of each class.
        from dali_pixmix.data.images import class_images

        _, files, labels = class_images(file_root)
        file_root = None
    sources = {}
    if file_root is not None:
        sources["file_root"] = str(file_root)
    if file_list is not None:
        sources["file_list"] = str(file_list)
    if files is not None:
        sources["files"] = [str(f) for f in files]
        if labels is not None:
            sources["labels"] = [int(x) for x in labels]
    if not any(k in sources for k in ("file_root", "file_list", "files")):
        raise ValueError("give the pipeline a file_root, a file_list or files")
    # shuffle_after_epoch: the same global permutation on every rank, redrawn every epoch.
    order = dict(shuffle_after_epoch=True) if shuffle else dict(random_shuffle=False,
                                                                stick_to_shard=True)
    return fn.readers.file(**sources, name="Reader", shard_id=shard_id, num_shards=num_shards,
                           pad_last_batch=True, **order)


def _normalize(images, *, crop, dtype, layout, scale, pos_x=0.5, pos_y=0.5,
               mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Crop + mean/std normalisation (`mean`, `std` on [0, 1] pixels; default ImageNet's);
    `scale` is 255 for uint8 input, 1 for [0,1]."""
    from nvidia.dali import fn

    return fn.crop_mirror_normalize(
        images, crop=(crop, crop), crop_pos_x=pos_x, crop_pos_y=pos_y, dtype=dali_dtype(dtype),
        output_layout=check_layout(layout), mean=[m * scale for m in mean],
        std=[s * scale for s in std])


# (DALI refuses **kwargs in a graph-defining function: the arguments are spelled out)
def _train_graph(*, reader_args, crop, gpu, stage, auto_augment, dtype, layout,
                 hw_decoder_load=HW_DECODER_LOAD):
    encoded, labels = _reader(**reader_args)
    return _augment(encoded, labels, crop=crop, gpu=gpu, stage=stage, auto_augment=auto_augment,
                    dtype=dtype, layout=layout, hw_decoder_load=hw_decoder_load)


def _stream_graph(*, source, crop, gpu, stage, auto_augment, dtype, layout,
                  hw_decoder_load=HW_DECODER_LOAD):
    """The training graph fed by `source`, an external source returning each batch's file
    paths (uint8 arrays of the encoded path) and labels; DALI reads the files itself."""
    from nvidia.dali import fn, types

    paths, labels = fn.external_source(source=source, num_outputs=2, batch=True,
                                       batch_info=True, dtype=[types.UINT8, types.INT32])
    return _augment(fn.io.file.read(paths), labels, crop=crop, gpu=gpu, stage=stage,
                    auto_augment=auto_augment, dtype=dtype, layout=layout,
                    hw_decoder_load=hw_decoder_load)


def _augment(encoded, labels, *, crop, gpu, stage, auto_augment, dtype, layout,
             hw_decoder_load=HW_DECODER_LOAD):
    """decode + random-resized-crop -> resize -> flip -> [method] -> normalise (training)."""
    from nvidia.dali import fn

    images = fn.decoders.image_random_crop(encoded,
                                           **random_crop_decoder_args(gpu, hw_decoder_load))
    images = fn.resize(images, resize_x=crop, resize_y=crop, antialias=True)
    return _flip_and_method(images, labels, crop=crop, gpu=gpu, stage=stage,
                            auto_augment=auto_augment, dtype=dtype, layout=layout)


def _flip_and_method(images, labels, *, crop, gpu, stage, auto_augment, dtype, layout,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, policy=None):
    """The training graphs' tail: flip -> [method] -> normalise (`_per_image_method`); the
    labels on the pipeline's device."""
    from nvidia.dali import fn

    images = fn.flip(images, horizontal=fn.random.coin_flip(probability=0.5))
    images = _per_image_method(images, labels, crop=crop, gpu=gpu, stage=stage,
                               auto_augment=auto_augment, dtype=dtype, layout=layout, mean=mean,
                               std=std, policy=policy)
    return images, (labels.gpu() if gpu else labels)


def _per_image_method(images, labels, *, crop, gpu, stage, auto_augment, dtype, layout,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, policy=None):
    """uint8 crops -> the method's normalised training images: a batch-level torch stage
    (which emits the final layout and dtype itself), or DALI's AutoAugment (`policy`, default
    ImageNet's; needs a pipeline with conditionals), then normalisation with `mean` and `std`,
    or normalisation alone, or normalisation then DALI's erase of the regions a stage draws per
    batch (Cutout: the stage, called with the batch's labels, returns them; DALI does the pixel
    work)."""
    from nvidia.dali import fn

    if stage is not None and stage.runs_in_torch:
        return fn.dl_tensor_python_function(
            images, function=stage, batch_processing=True, synchronize_stream=False,
            num_outputs=1, output_layouts=layout, device="gpu" if gpu else "cpu")
    if auto_augment:
        images = auto_augment_images(images, crop, policy)
    images = _normalize(images, crop=crop, dtype=dtype, layout=layout, scale=255.0, mean=mean,
                        std=std)
    if stage is not None:
        anchors, shapes = fn.python_function(labels, function=stage.regions,
                                             batch_processing=True, num_outputs=2)
        images = fn.erase(images, anchor=anchors, shape=shapes, axis_names="HW",
                          fill_value=0.0)
    return images


def auto_augment_images(images, crop: int, policy=None):
    """AutoAugment on uint8 HWC crops with DALI's own `nvidia.dali.auto_aug`: `policy`
    (default: DALI's ImageNet policy, translations relative to the crop) applied as
    `auto_augment(..., "image_net")` does (fill 128), except that rotate, shear and translate
    sample the nearest pixel, as the reference implementation (TensorFlow's policy_v0) and
    torchvision do; DALI's bilinear default costs 3-10x more on CPU. Needs a pipeline built with
    `enable_conditionals=True`; random draws follow the pipeline's seed."""
    from nvidia.dali import types
    from nvidia.dali.auto_aug import auto_augment as aa

    if policy is None:
        policy = aa.get_image_net_policy(use_shape=True,
                                         max_translate_rel=AUTOAUGMENT_MAX_TRANSLATE)
    with _hidden_warnings("nvidia.dali.fn.experimental."):  # equalize; CIFAR's: filter
        return aa.apply_auto_augment(policy, images, shape=(crop, crop), fill_value=128,
                                     interp_type=types.INTERP_NN)


def cifar_auto_augment_policy():
    """DALI's AutoAugment policy for CIFAR (found on reduced CIFAR-10), translations relative
    to the crop (up to `CIFAR_AUTOAUGMENT_MAX_TRANSLATE` of it: 10 px at 32 px)."""
    from nvidia.dali.auto_aug import auto_augment as aa

    return aa.get_reduced_cifar10_policy(use_shape=True,
                                         max_translate_rel=CIFAR_AUTOAUGMENT_MAX_TRANSLATE)


def _array_graph(*, source, size, crop, padding, gpu, stage, auto_augment, dtype, layout, mean,
                 std):
    """The CIFAR training graph over pictures fed by `source`, an external source returning
    each batch's uint8 [B, size, size, 3] pictures and labels: random crop with zero padding,
    flip, [method], normalise."""
    from nvidia.dali import fn, types

    images, labels = fn.external_source(source=source, num_outputs=2, batch=True,
                                        batch_info=True, dtype=[types.UINT8, types.INT32],
                                        layout=["HWC", ""])
    images = padded_random_crop(images.gpu() if gpu else images, size, crop, padding)
    return _flip_and_method(images, labels, crop=crop, gpu=gpu, stage=stage,
                            auto_augment=auto_augment, dtype=dtype, layout=layout, mean=mean,
                            std=std, policy=cifar_auto_augment_policy() if auto_augment else None)


def padded_random_crop(images, size: int, crop: int, padding: int):
    """torchvision's `RandomCrop(crop, padding)` of `size` x `size` pictures: a `crop` window
    at a uniform offset of the picture zero-padded by `padding` on every side (the window's
    top-left corner at row, column in [-padding, size + padding - crop] of the picture)."""
    from nvidia.dali import fn, types

    if not 1 <= crop <= size + 2 * padding or padding < 0:
        raise ValueError(f"a {crop} px crop does not fit {size} px pictures padded by {padding}")
    start = fn.random.uniform(values=list(range(-padding, size + padding - crop + 1)),
                              shape=[2], dtype=types.INT32)  # (row, column)
    return fn.slice(images, start=start, shape=[crop, crop], axes=[0, 1],
                    out_of_bounds_policy="pad", fill_values=0)


def _torchvision_sizes(encoded, resize, crop, no_resize):
    """Per-sample (height, width, crop_pos_y, crop_pos_x) exactly as torchvision computes them.

    Resize(r): shorter side -> r, longer side -> int(r * long / short) (truncated); CenterCrop(c):
    top = round((H - c) / 2) with Python's round-half-to-even. DALI would round the long side and
    the crop offset half up, shifting some pictures by one pixel against the reference protocol.
    """
    from nvidia.dali import fn, types
    from nvidia.dali.math import floor

    shape = fn.cast(fn.peek_image_shape(encoded, adjust_orientation=ADJUST_ORIENTATION),
                    dtype=types.FLOAT)
    h, w = shape[0], shape[1]
    if not no_resize:
        short = h * (h <= w) + w * (w < h)
        h, w = floor(resize * h / short), floor(resize * w / short)
    return h, w, _centre_pos(h, crop), _centre_pos(w, crop)


def _centre_pos(extent, crop):
    """crop_pos in [0, 1] whose anchor pos * (extent - crop) is round_half_even((extent-crop)/2)."""
    from nvidia.dali.math import floor

    diff = extent - crop
    half = floor(diff / 2)
    odd_diff, odd_half = diff - 2 * half, half - 2 * floor(half / 2)
    top = half + odd_diff * odd_half  # x.5 goes to the even neighbour
    return top / (diff + (diff <= 0))  # diff 0 (or negative: DALI reports the error) -> 0


def _eval_graph(*, reader_args, resize, crop, no_resize, gpu, dtype, layout):
    from nvidia.dali import fn, types

    encoded, labels = _reader(**reader_args)
    height, width, pos_y, pos_x = _torchvision_sizes(encoded, resize, crop, no_resize)
    images = fn.decoders.image(encoded, **decoder_args(gpu), output_type=types.RGB)
    if not no_resize:
        images = fn.resize(images, resize_x=width, resize_y=height, antialias=True)
    images = _normalize(images, crop=crop, dtype=dtype, layout=layout, scale=255.0, pos_x=pos_x,
                        pos_y=pos_y)
    return images, (labels.gpu() if gpu else labels)


@contextmanager
def _hidden_warnings(text: str):
    """Do not show warnings whose message contains `text`. DALI 2.4's AutoAugment uses its own
    deprecated `fn.experimental.equalize` (and `.filter` for sharpness, in the CIFAR policy)
    and shows that warning under a filter of its own
    (`simplefilter("default")` inside the call), so only the display can be intercepted."""
    shown = warnings.showwarning

    def show(message, *args, **kwargs):
        if text not in str(message):
            shown(message, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _build(graph, *, batch_size, num_threads, device_id, seed, conditionals=False,
           checkpointing=False, checkpoint=None, **graph_args):
    from nvidia.dali import pipeline_def

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pipe = pipeline_def(graph, batch_size=batch_size, num_threads=num_threads,
                        device_id=device_id, seed=seed, enable_conditionals=conditionals,
                        enable_checkpointing=checkpointing, checkpoint=checkpoint)(**graph_args)
    pipe.build()
    return pipe


def _pipeline_stage(stage, *, auto_augment, crop, seed, shard_id, dtype, layout, start=0,
                    normalisation=None):
    """The shard's own stage, reseeded from (stage seed, seed, shard_id), whose first batch is
    batch `start` of the stream (a stage seeds its draws per batch from that index),
    normalising with `normalisation` = (mean, std) (None: the stage's default, ImageNet's)."""
    if stage is None:
        return None
    if auto_augment:
        raise ValueError("give the training pipeline a stage or auto_augment, not both")
    if stage.crop != crop:
        raise ValueError(f"{type(stage).__name__} crop {stage.crop} differs from the "
                         f"pipeline crop {crop}")
    mean_std = {} if normalisation is None else dict(zip(("mean", "std"), normalisation))
    return stage.for_pipeline(derive_seed(stage.seed, seed, shard_id), dtype,
                              check_layout(layout), start, **mean_std)


# --------------------------------------------------------------------------- public builders
def train_pipeline(*, file_root=None, file_list=None, batch_size: int, crop: int = 224,
                   device_id: Optional[int] = None, shard_id: int = 0, num_shards: int = 1,
                   seed: int = 0, num_threads: int = 2, stage: Optional[BatchStage] = None,
                   auto_augment: bool = False, dtype: str = "float32", layout: str = "CHW",
                   random_shuffle: bool = True, files: Optional[Sequence[str]] = None,
                   labels: Optional[Sequence[int]] = None,
                   hw_decoder_load: float = HW_DECODER_LOAD):
    """Built training pipeline: read -> random-resized-crop -> flip -> [method] -> normalise.

    The per-image method is `stage` (a `pipelines.stage.BatchStage`: PixMix, AugMix, Cutout) or,
    with `auto_augment=True`, DALI's AutoAugment with the ImageNet policy; neither is the
    paper's baseline. Each shard uses seed `seed + shard_id` for DALI's random ops (AutoAugment
    included) and a stage reseeded from (stage seed, seed, shard_id), so ranks draw different
    augmentations. `random_shuffle` uses the reader's global per-epoch reshuffle
    (`shuffle_after_epoch`). Training runs use `stream_train_pipeline` (the same graph fed with
    the run's own data order). On a GPU the crop is decoded by nvJPEG as a region of interest
    (`random_crop_decoder_args`), `hw_decoder_load` of it by the hardware decoder.
    """
    stage = _pipeline_stage(stage, auto_augment=auto_augment, crop=crop, seed=seed,
                            shard_id=shard_id, dtype=dtype, layout=layout)
    reader_args = dict(file_root=file_root, file_list=file_list, files=files, labels=labels,
                       shard_id=shard_id, num_shards=num_shards, shuffle=random_shuffle)
    return _build(_train_graph, batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id, seed=seed + shard_id, conditionals=auto_augment,
                  reader_args=reader_args, crop=crop, gpu=device_id is not None, stage=stage,
                  auto_augment=auto_augment, dtype=dtype, layout=layout,
                  hw_decoder_load=hw_decoder_load)


def stream_train_pipeline(source, *, batch_size: int, crop: int = 224,
                          device_id: Optional[int] = None, shard_id: int = 0, seed: int = 0,
                          num_threads: int = 2, stage: Optional[BatchStage] = None,
                          auto_augment: bool = False, dtype: str = "float32",
                          layout: str = "CHW", start: int = 0,
                          checkpoint: Optional[bytes] = None,
                          hw_decoder_load: float = HW_DECODER_LOAD):
    """Built training pipeline over the batches of `source` (a `pipelines.loaders.TrainStream`):
    read -> random-resized-crop -> flip -> [method] -> normalise, as `train_pipeline`.

    It serves a whole run: `source` decides which files every batch holds (its data order), and
    batch `start` is the first it asks for. Seeds as in `train_pipeline`; the stage is seeded
    per batch, its first batch being batch `start`. DALI checkpointing is on: the iterator's
    `checkpoints()` hold the random ops' state, and a pipeline built with that `checkpoint`
    (and the same arguments) draws on exactly as the saved one would have.
    """
    stage = _pipeline_stage(stage, auto_augment=auto_augment, crop=crop, seed=seed,
                            shard_id=shard_id, dtype=dtype, layout=layout, start=start)
    return _build(_stream_graph, batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id, seed=seed + shard_id, conditionals=auto_augment,
                  checkpointing=True, checkpoint=checkpoint, source=source, crop=crop,
                  gpu=device_id is not None, stage=stage, auto_augment=auto_augment,
                  dtype=dtype, layout=layout, hw_decoder_load=hw_decoder_load)


def array_train_pipeline(source, *, batch_size: int, size: int = 32, crop: int = 32,
                         padding: int = CIFAR_PADDING, device_id: Optional[int] = None,
                         shard_id: int = 0, seed: int = 0, num_threads: int = 2,
                         stage: Optional[BatchStage] = None, auto_augment: bool = False,
                         dtype: str = "float32", layout: str = "CHW", start: int = 0,
                         checkpoint: Optional[bytes] = None, mean: Sequence[float] = CIFAR_MEAN,
                         std: Sequence[float] = CIFAR_STD):
    """Built training pipeline over in-memory pictures (CIFAR), the reference's CIFAR recipe:
    random crop of `crop` px with `padding` px of zero padding -> flip -> [method] -> normalise
    with `mean` and `std` (default CIFAR's 0.5, 0.5).

    `source` (a `pipelines.loaders.ArrayStream`) returns each batch's uint8
    [B, size, size, 3] pictures and labels; on a GPU (`device_id`) they are copied to it first
    and every operator, the stage included, runs there. The per-image method is `stage` or, with
    `auto_augment`, DALI's AutoAugment with its CIFAR policy (`cifar_auto_augment_policy`).
    Seeds, `start` and `checkpoint` as in `stream_train_pipeline`.
    """
    stage = _pipeline_stage(stage, auto_augment=auto_augment, crop=crop, seed=seed,
                            shard_id=shard_id, dtype=dtype, layout=layout, start=start,
                            normalisation=(mean, std))
    return _build(_array_graph, batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id, seed=seed + shard_id, conditionals=auto_augment,
                  checkpointing=True, checkpoint=checkpoint, source=source, size=size, crop=crop,
                  padding=padding, gpu=device_id is not None, stage=stage,
                  auto_augment=auto_augment, dtype=dtype, layout=layout, mean=tuple(mean),
                  std=tuple(std))


def eval_pipeline(*, file_root=None, file_list=None, files=None, labels=None, batch_size: int,
                  resize: int = 256, crop: int = 224, no_resize: bool = False,
                  device_id: Optional[int] = None, shard_id: int = 0, num_shards: int = 1,
                  num_threads: int = 2, dtype: str = "float32", layout: str = "CHW"):
    """Built evaluation pipeline: decode -> shorter side to `resize` -> centre crop -> normalise.

    `no_resize=True` skips the resize (pictures already at evaluation size, e.g. ImageNet-C):
    decode -> centre crop -> normalise. Files are read in order, each shard a fixed contiguous
    slice. `files`/`labels` give explicit label indices (the model's class indices).
    """
    if files is not None and labels is not None and len(files) != len(labels):
        raise ValueError(f"got {len(files)} files but {len(labels)} labels")
    reader_args = dict(file_root=file_root, file_list=file_list, files=files, labels=labels,
                       shard_id=shard_id, num_shards=num_shards, shuffle=False)
    return _build(_eval_graph, batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id, seed=shard_id, reader_args=reader_args, resize=resize,
                  crop=crop, no_resize=no_resize, gpu=device_id is not None, dtype=dtype,
                  layout=layout)
