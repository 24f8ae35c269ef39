"""The GPU path (nvJPEG decode, GPU ops, PixMix on DALI's stream) agrees with the CPU path."""
import numpy as np
import pytest
import torch

from dali_pixmix.distributed import DistInfo
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.pipelines.loaders import make_eval_loader, make_train_loader
from dali_pixmix.pipelines.stage import PixMixStage

pytestmark = pytest.mark.gpu

CROP = 32
CUDA = torch.device("cuda", 0)


def one_batch(loader):
    batches = list(loader)  # a full epoch, so the iterator ends cleanly
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    return images, labels


def test_gpu_eval_matches_cpu_eval(tiny_imagenet):
    common = dict(file_root=tiny_imagenet / "val", batch_size=8, resize=40, crop=CROP)
    gpu_images, gpu_labels = one_batch(make_eval_loader(**common, dist=DistInfo(device=CUDA)))
    cpu_images, cpu_labels = one_batch(make_eval_loader(**common, dist=DistInfo()))
    assert gpu_images.device == CUDA and gpu_labels.device == CUDA
    assert torch.equal(gpu_labels.cpu(), cpu_labels)
    diff = (gpu_images.cpu() - cpu_images).abs()
    # nvJPEG and libjpeg-turbo differ by a grey level or two; geometry must be identical
    assert diff.mean() < 0.02 and diff.max() < 0.2


def test_gpu_channels_last_and_float16(tiny_imagenet):
    loader = make_eval_loader(file_root=tiny_imagenet / "val", batch_size=8, resize=40,
                              crop=CROP, dist=DistInfo(device=CUDA), dtype="float16",
                              channels_last=True)
    images, _ = one_batch(loader)
    assert images.dtype == torch.float16 and images.shape == (24, 3, CROP, CROP)
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_gpu_train_with_pixmix_is_seeded_and_active(tiny_imagenet, tiny_mixing_dir):
    bank = MixingBank.from_folder(tiny_mixing_dir, size=40, device=CUDA)
    assert bank.device == CUDA
    common = dict(root=tiny_imagenet / "train", batch_size=8, dist=DistInfo(device=CUDA),
                  seed=3, crop=CROP)
    first, labels = next(iter(make_train_loader(**common, stage=PixMixStage(bank, crop=CROP))))
    again, _ = next(iter(make_train_loader(**common, stage=PixMixStage(bank, crop=CROP))))
    plain, plain_labels = next(iter(make_train_loader(**common, stage=None)))
    assert first.device == CUDA and first.shape == (8, 3, CROP, CROP)
    assert torch.equal(labels, plain_labels)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, plain)


def test_gpu_bank_matches_cpu_bank(tiny_mixing_dir):
    gpu = MixingBank.from_folder(tiny_mixing_dir, size=40, device=CUDA)
    cpu = MixingBank.from_folder(tiny_mixing_dir, size=40)
    diff = (gpu.images.cpu().int() - cpu.images.int()).abs().float()
    assert diff.mean() < 2


def test_pinned_host_bank_serves_cuda_batches():
    images = torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8)
    host = MixingBank(images.pin_memory())
    assert host.is_pinned
    on_gpu = host.sample(16, CROP, torch.Generator().manual_seed(0), device=CUDA)
    on_cpu = host.sample(16, CROP, torch.Generator().manual_seed(0))
    assert on_gpu.device == CUDA and torch.equal(on_gpu.cpu(), on_cpu)


def test_cuda_bank_refuses_cpu_batches(tmp_path):
    bank = MixingBank(torch.zeros((2, 40, 40, 3), dtype=torch.uint8, device=CUDA))
    with pytest.raises(ValueError, match="mixing bank is on cuda:0 but the batch is on cpu"):
        bank.sample(2, CROP, torch.Generator(device=CUDA), device="cpu")
    path = bank.save(tmp_path / "bank.npy")
    loaded = MixingBank.load(path, device=CUDA)
    assert loaded.device == CUDA and np.array_equal(loaded.images.cpu().numpy(),
                                                    bank.images.cpu().numpy())


def test_loaded_cuda_bank_is_ready_for_other_streams(tmp_path):
    """The bank is read on DALI's stream, which does not wait for the stream that copied it."""
    images = torch.randint(0, 256, (64, 40, 40, 3), dtype=torch.uint8)
    path = MixingBank(images).save(tmp_path / "bank.npy")
    side = torch.cuda.Stream()
    bank = MixingBank.load(path, device=CUDA)
    with torch.cuda.stream(side):
        crops = bank.sample(32, CROP, torch.Generator(device=CUDA).manual_seed(1))
    side.synchronize()
    picks = crops.cpu()
    assert picks.shape == (32, CROP, CROP, 3)
    # every crop is a window of some bank picture (a read before the copy would give garbage)
    windows = images.unfold(1, CROP, 1).unfold(2, CROP, 1)  # [N, H', W', 3, CROP, CROP]
    windows = windows.permute(0, 1, 2, 4, 5, 3).reshape(-1, CROP, CROP, 3)
    for crop in picks[:4]:
        assert (windows == crop).flatten(1).all(1).any()


def test_gpu_training_loader_resumes_from_its_state(tiny_imagenet, tiny_mixing_dir):
    """The nvJPEG (mixed) training pipeline takes DALI checkpointing: a loader made from
    `state()` mid-epoch yields the batches of the loader that went on (same crops, flips and
    PixMix draws); without the state the crops differ."""
    bank = MixingBank.from_folder(tiny_mixing_dir, size=40, device=CUDA)
    common = dict(root=tiny_imagenet / "train", batch_size=8, dist=DistInfo(device=CUDA),
                  seed=5, crop=CROP)
    going = make_train_loader(**common, stage=PixMixStage(bank, crop=CROP))
    batches = iter(going)
    for _ in range(2):
        next(batches)
    state, at = going.state(), dict(epoch=0, step=2)
    ahead = [(x.clone(), y.clone()) for x, y in batches]
    restored = [(x, y) for x, y in make_train_loader(**common, **at, dali_state=state,
                                                     stage=PixMixStage(bank, crop=CROP))]
    fresh = [x for x, _ in make_train_loader(**common, **at, stage=PixMixStage(bank, crop=CROP))]
    assert len(restored) == len(ahead) == len(going) - 2
    for (x, y), (rx, ry) in zip(ahead, restored):
        assert torch.equal(y, ry)
        torch.testing.assert_close(rx, x)
    assert not torch.allclose(fresh[0], ahead[0][0])
