"""The second GPU review (issue 20) on a CUDA machine: exact .5 ties of the contrast grey level,
int32 dense histograms, pinned host copies, nvJPEG decoding training crops, and DALI's
zero-copy batches kept alive until their step ran."""
import weakref

import numpy as np
import pytest
import torch
from PIL import Image, ImageStat
from scenes import scenes

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._rows import to_device
from dali_pixmix.augment.pixmix._dense_ops import row_histograms

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("h, w, total", [(7, 14, 147), (14, 23, 1127), (22, 17, 5797)])
def test_mean_grey_ties_on_cuda_round_as_pil(h, w, total):
    """Means of exactly x.5 that CUDA's tensor / scalar (a reciprocal multiply) rounded down."""
    values = np.zeros(h * w, np.uint8)
    values[:total // 255] = 255
    values[total // 255] = total % 255
    expected = int(ImageStat.Stat(Image.fromarray(values.reshape(h, w))).mean[0] + 0.5)
    luma = torch.from_numpy(values.astype(np.float32)).view(1, h, w, 1).to(CUDA)
    assert A.mean_grey(luma).item() == expected


def test_int32_histograms_on_cuda_equal_the_cpu_counts():
    x = torch.from_numpy(scenes(4, 64, 80, 3))
    x[2, ..., 1] = 200  # one bin holds the whole channel
    offsets = (torch.arange(3, dtype=torch.int32) * 256
               + torch.arange(4, dtype=torch.int32).view(4, 1, 1, 1) * 768)
    index = (x.int() + offsets).view(-1)
    gpu = row_histograms(index.to(CUDA), 4)
    assert gpu.dtype == torch.int32 and torch.equal(gpu.cpu(), row_histograms(index, 4))
    assert int(gpu[2, 1, 200]) == 64 * 80


def test_small_host_tensors_go_to_the_gpu_from_pinned_memory():
    """to_device pins first (a non-blocking copy from pageable memory may synchronise), with no
    synchronisation torch reports, and the copy arrives intact; a tensor already on the GPU is
    passed through. (Whether the driver staged a pageable copy synchronously is not visible
    here: this is the working path, not proof of the old fault.)"""
    host = torch.arange(1000)
    assert not host.is_pinned()
    torch.cuda.set_sync_debug_mode("error")
    try:
        moved = to_device(host, CUDA)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(moved.cpu(), host) and to_device(moved, CUDA) is moved


def test_the_training_decoder_decodes_crops_on_the_gpu(tmp_path):
    """With the CPU decoders excluded, nvImageCodec decodes baseline JPEG regions without fancy
    upsampling (the training decoder's settings): DALI need not fall back to the CPU."""
    from dali_pixmix.check import fixtures
    from dali_pixmix.check.functional import gpu_roi_verdict, roi_decodes
    from dali_pixmix.check.settings import for_machine

    files = fixtures.jpeg_variants(for_machine(True, True, tmp_path))
    decoded = roi_decodes(files, fancy=False)
    assert all(ok for stem, ok in decoded.items() if stem.startswith("baseline")), decoded
    gpu_roi_verdict(decoded, [])


def test_a_kept_batch_is_alive_until_its_step_completed():
    """The step records hold a CUDA batch past the next step's queueing; the batch is let go
    only after its event completed."""
    from dali_pixmix.training.records import StepRecords

    records = StepRecords(CUDA, batch_size=4)
    images = torch.rand(4, 3, 64, 64, device=CUDA)
    alive = weakref.ref(images)
    torch.cuda._sleep(10_000_000)  # the step is still queued when the host moves on
    records.push(images.sum(), torch.zeros(4, dtype=torch.long, device=CUDA), stop=False,
                 save=False, where=(1, 0, 1), batch=(images,))
    del images
    assert alive() is not None
    records.pop()  # waits for the step's event
    assert alive() is None
