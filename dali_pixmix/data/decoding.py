"""The decoder settings every DALI decoder of the package uses (training, evaluation, the
mixing bank, the checks that name undecodable files): one device switch, EXIF orientation
ignored, and nvJPEG's preallocation."""
from __future__ import annotations

from typing import Optional

# nvJPEG ("mixed") preallocation. DALI reserves, per decoder THREAD, one device buffer of
# device_memory_padding and two pinned host buffers of host_memory_padding. NVIDIA's ResNet-50
# example sizes them for the largest ImageNet picture (211,025,920 / 140,544,512 bytes): with 4
# threads that is 0.84 GB of GPU and 1.1 GB of pinned host memory per pipeline, times 8 ranks
# and every evaluation cell. A buffer that proves too small just grows once (one reallocation
# per thread, when a larger picture arrives), so:
# - training: 64 MiB device / 32 MiB host per thread (4 threads: 256 MiB GPU + 256 MiB pinned
#   host per rank), far above what a typical ImageNet picture (~0.2 megapixels) needs; the few
#   much larger ones grow a thread's buffer once. The training pipeline is built once per run
#   (`pipelines.loaders.TrainLoader`), so this is allocated once, never again per epoch;
# - evaluation and the mixing bank: DALI's defaults (16 MiB device / 8 MiB host per thread;
#   4 threads: 64 MiB GPU + 64 MiB pinned host), as most of their pipelines are short-lived
#   (training's validation keeps one for the whole run).
TRAIN_DECODER_PADDING = dict(device_memory_padding=64 << 20, host_memory_padding=32 << 20)
# EXIF orientation tags are ignored, as PIL's Image.open (torchvision, the reference code) does:
# every decoder and shape probe of the package passes this, so training, evaluation and the
# mixing bank see the stored pixel grid, never a rotated one.
ADJUST_ORIENTATION = False
# Share of the JPEGs nvJPEG's hardware decoder takes on GPUs that have one (A100, H100, H200;
# ignored elsewhere): NVIDIA's ResNet-50 example sets 0.99, DALI's default is 0.65 (the rest
# goes to the CUDA decoder, whose Huffman stage runs on the CPU threads). `data.hw_decoder_load`.
HW_DECODER_LOAD = 0.99


def decoder_args(gpu: bool, padding: Optional[dict] = None, *, roi: bool = False,
                 hw_decoder_load: float = HW_DECODER_LOAD) -> dict:
    """Keyword arguments of every image decoder of the package (`fn.decoders.image*`).

    On the GPU: nvJPEG (`mixed`) with the given preallocation `padding` (default: DALI's) and
    `hw_decoder_load`. libjpeg-turbo's "fancy" chroma upsampling only for FULL-image decodes
    (`roi=False`: evaluation, the mixing bank, the self-check), so their pixels match the CPU
    decoder's (without it colour edges differ by ~30 grey levels). A region-of-interest decode
    (`roi=True`: training's `image_random_crop`) goes without: nvImageCodec's nvJPEG decoders
    refuse ROI + fancy upsampling with nvJPEG < 13.2 and hand the image to libjpeg-turbo on the
    CPU threads, so training would silently never decode on the GPU; a training crop needs no
    libjpeg-identical chroma. On the CPU: the CPU decoder (always fancy). Both ignore EXIF
    orientation tags (`ADJUST_ORIENTATION`).
    """
    if not gpu:
        return dict(device="cpu", adjust_orientation=ADJUST_ORIENTATION)
    return dict(device="mixed", jpeg_fancy_upsampling=not roi, hw_decoder_load=hw_decoder_load,
                adjust_orientation=ADJUST_ORIENTATION, **(padding or {}))
