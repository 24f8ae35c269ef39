"""DALI pipelines for training (random-resized-crop + flip + a per-image method) and evaluation.

One code path with a device switch: `device_id=None` builds a CPU-only pipeline (CPU decoders and
operators, used by tests and CI); an integer `device_id` decodes with nvJPEG (`mixed`) and runs
every operator, the per-image stage included, on that GPU. The training graph's per-image
method is a batch-level torch stage (`data.stage`: PixMix, AugMix, Cutout) or DALI's own
AutoAugment (`nvidia.dali.auto_aug`, ImageNet policy).

Conventions: readers are named "Reader" (iterators size epochs from it); `shard_id` is the GLOBAL
rank and `num_shards` the world size; outputs are `(images, labels)` with images normalised by the
ImageNet mean/std as float32 or float16, layout CHW or HWC (HWC feeds channels_last models), and
labels int32 `[B, 1]`. The training graph after the reader (`_augment`) is shared by the
reader-fed `train_pipeline` (tools, checks, benchmarks) and `stream_train_pipeline`, which a
training run builds once and feeds with its own data order through an external source.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Optional, Sequence

from dali_pixmix.seeds import derive_seed

if TYPE_CHECKING:
    from dali_pixmix.data.stage import BatchStage


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RRC_ASPECT = (3.0 / 4.0, 4.0 / 3.0)  # torchvision RandomResizedCrop defaults
RRC_AREA = (0.08, 1.0)
LAYOUTS = ("CHW", "HWC")
# AutoAugment's ImageNet policy translates by up to 150/331 of the image (the AutoAugment paper:
# 150 px on 331 px pictures; torchvision's relative setting), whatever the crop size.
AUTOAUGMENT_MAX_TRANSLATE = 150.0 / 331.0
# nvJPEG ("mixed") preallocation. DALI reserves, per decoder THREAD, one device buffer of
# device_memory_padding and two pinned host buffers of host_memory_padding. NVIDIA's ResNet-50
# example sizes them for the largest ImageNet picture (211,025,920 / 140,544,512 bytes): with 4
# threads that is 0.84 GB of GPU and 1.1 GB of pinned host memory per pipeline, times 8 ranks
# and every evaluation cell. A buffer that proves too small just grows once (one reallocation
# per thread, when a larger picture arrives), so:
# - training: 64 MiB device / 32 MiB host per thread (4 threads: 256 MiB GPU + 256 MiB pinned
#   host per rank), far above what a typical ImageNet picture (~0.2 megapixels) needs; the few
#   much larger ones grow a thread's buffer once. The training pipeline is built once per run
#   (`data.loaders.TrainLoader`), so this is allocated once, never again per epoch;
# - evaluation and the mixing bank: DALI's defaults (16 MiB device / 8 MiB host per thread;
#   4 threads: 64 MiB GPU + 64 MiB pinned host), as most of their pipelines are short-lived
#   (training's validation keeps one for the whole run).
TRAIN_DECODER_PADDING = dict(device_memory_padding=64 << 20, host_memory_padding=32 << 20)
# EXIF orientation tags are ignored, as PIL's Image.open (torchvision, the reference code) does:
# every decoder and shape probe of the package passes this, so training, evaluation and the
# mixing bank see the stored pixel grid, never a rotated one.
ADJUST_ORIENTATION = False


# --------------------------------------------------------------------------- graph pieces
def decoder_args(gpu: bool, padding: Optional[dict] = None) -> dict:
    """Keyword arguments of every image decoder of the package (`fn.decoders.image*`).

    On the GPU: nvJPEG (`mixed`) with libjpeg-turbo's "fancy" chroma upsampling, so decoded
    pixels match the CPU decoder's (without it, colour edges differ by ~30 grey levels), and
    the given preallocation `padding` (default: DALI's). On the CPU: the CPU decoder. Both
    ignore EXIF orientation tags (`ADJUST_ORIENTATION`).
    """
    if not gpu:
        return dict(device="cpu", adjust_orientation=ADJUST_ORIENTATION)
    return dict(device="mixed", jpeg_fancy_upsampling=True,
                adjust_orientation=ADJUST_ORIENTATION, **(padding or {}))


def _dali_dtype(dtype: str):
    from nvidia.dali import types

    table = {"float32": types.FLOAT, "float16": types.FLOAT16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


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


def _normalize(images, *, crop, dtype, layout, scale, pos_x=0.5, pos_y=0.5):
    """Crop + ImageNet mean/std normalisation; `scale` is 255 for uint8 input, 1 for [0,1]."""
    from nvidia.dali import fn

    return fn.crop_mirror_normalize(
        images, crop=(crop, crop), crop_pos_x=pos_x, crop_pos_y=pos_y, dtype=_dali_dtype(dtype),
        output_layout=_check_layout(layout), mean=[m * scale for m in IMAGENET_MEAN],
        std=[s * scale for s in IMAGENET_STD])


# (DALI refuses **kwargs in a graph-defining function: the arguments are spelled out)
def _train_graph(*, reader_args, crop, gpu, stage, auto_augment, dtype, layout):
    encoded, labels = _reader(**reader_args)
    return _augment(encoded, labels, crop=crop, gpu=gpu, stage=stage, auto_augment=auto_augment,
                    dtype=dtype, layout=layout)


def _stream_graph(*, source, crop, gpu, stage, auto_augment, dtype, layout):
    """The training graph fed by `source`, an external source returning each batch's file
    paths (uint8 arrays of the encoded path) and labels; DALI reads the files itself."""
    from nvidia.dali import fn, types

    paths, labels = fn.external_source(source=source, num_outputs=2, batch=True,
                                       batch_info=True, dtype=[types.UINT8, types.INT32])
    return _augment(fn.io.file.read(paths), labels, crop=crop, gpu=gpu, stage=stage,
                    auto_augment=auto_augment, dtype=dtype, layout=layout)


def _augment(encoded, labels, *, crop, gpu, stage, auto_augment, dtype, layout):
    """decode + random-resized-crop -> resize -> flip -> [method] -> normalise (training)."""
    from nvidia.dali import fn, types

    images = fn.decoders.image_random_crop(
        encoded, **decoder_args(gpu, TRAIN_DECODER_PADDING), output_type=types.RGB,
        random_aspect_ratio=list(RRC_ASPECT), random_area=list(RRC_AREA), num_attempts=100)
    images = fn.resize(images, resize_x=crop, resize_y=crop, antialias=True)
    images = fn.flip(images, horizontal=fn.random.coin_flip(probability=0.5))
    images = _per_image_method(images, labels, crop=crop, gpu=gpu, stage=stage,
                               auto_augment=auto_augment, dtype=dtype, layout=layout)
    return images, (labels.gpu() if gpu else labels)


def _per_image_method(images, labels, *, crop, gpu, stage, auto_augment, dtype, layout):
    """uint8 crops -> the method's normalised training images: a batch-level torch stage
    (which emits the final layout and dtype itself), or DALI's AutoAugment (ImageNet policy,
    needs a pipeline with conditionals), then normalisation, or normalisation alone, or
    normalisation then DALI's erase of the regions a stage draws per batch (Cutout: the
    stage, called with the batch's labels, returns them; DALI does the pixel work)."""
    from nvidia.dali import fn

    if stage is not None and stage.runs_in_torch:
        return fn.dl_tensor_python_function(
            images, function=stage, batch_processing=True, synchronize_stream=False,
            num_outputs=1, output_layouts=layout, device="gpu" if gpu else "cpu")
    if auto_augment:
        images = auto_augment_images(images, crop)
    images = _normalize(images, crop=crop, dtype=dtype, layout=layout, scale=255.0)
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
    with _hidden_warnings("fn.experimental.equalize"):
        return aa.apply_auto_augment(policy, images, shape=(crop, crop), fill_value=128,
                                     interp_type=types.INTERP_NN)


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
    deprecated `fn.experimental.equalize` and shows that warning under a filter of its own
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


def _pipeline_stage(stage, *, auto_augment, crop, seed, shard_id, dtype, layout, start=0):
    """The shard's own stage, reseeded from (stage seed, seed, shard_id), whose first batch is
    batch `start` of the stream (a stage seeds its draws per batch from that index)."""
    if stage is None:
        return None
    if auto_augment:
        raise ValueError("give the training pipeline a stage or auto_augment, not both")
    if stage.crop != crop:
        raise ValueError(f"{type(stage).__name__} crop {stage.crop} differs from the "
                         f"pipeline crop {crop}")
    return stage.for_pipeline(derive_seed(stage.seed, seed, shard_id), dtype,
                              _check_layout(layout), start)


# --------------------------------------------------------------------------- public builders
def train_pipeline(*, file_root=None, file_list=None, batch_size: int, crop: int = 224,
                   device_id: Optional[int] = None, shard_id: int = 0, num_shards: int = 1,
                   seed: int = 0, num_threads: int = 2, stage: Optional[BatchStage] = None,
                   auto_augment: bool = False, dtype: str = "float32", layout: str = "CHW",
                   random_shuffle: bool = True, files: Optional[Sequence[str]] = None,
                   labels: Optional[Sequence[int]] = None):
    """Built training pipeline: read -> random-resized-crop -> flip -> [method] -> normalise.

    The per-image method is `stage` (a `data.stage.BatchStage`: PixMix, AugMix, Cutout) or,
    with `auto_augment=True`, DALI's AutoAugment with the ImageNet policy; neither is the
    paper's baseline. Each shard uses seed `seed + shard_id` for DALI's random ops (AutoAugment
    included) and a stage reseeded from (stage seed, seed, shard_id), so ranks draw different
    augmentations. `random_shuffle` uses the reader's global per-epoch reshuffle
    (`shuffle_after_epoch`). Training runs use `stream_train_pipeline` (the same graph fed with
    the run's own data order).
    """
    stage = _pipeline_stage(stage, auto_augment=auto_augment, crop=crop, seed=seed,
                            shard_id=shard_id, dtype=dtype, layout=layout)
    reader_args = dict(file_root=file_root, file_list=file_list, files=files, labels=labels,
                       shard_id=shard_id, num_shards=num_shards, shuffle=random_shuffle)
    return _build(_train_graph, batch_size=batch_size, num_threads=num_threads,
                  device_id=device_id, seed=seed + shard_id, conditionals=auto_augment,
                  reader_args=reader_args, crop=crop, gpu=device_id is not None, stage=stage,
                  auto_augment=auto_augment, dtype=dtype, layout=layout)


def stream_train_pipeline(source, *, batch_size: int, crop: int = 224,
                          device_id: Optional[int] = None, shard_id: int = 0, seed: int = 0,
                          num_threads: int = 2, stage: Optional[BatchStage] = None,
                          auto_augment: bool = False, dtype: str = "float32",
                          layout: str = "CHW", start: int = 0,
                          checkpoint: Optional[bytes] = None):
    """Built training pipeline over the batches of `source` (a `data.loaders.TrainStream`):
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
                  dtype=dtype, layout=layout)


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
