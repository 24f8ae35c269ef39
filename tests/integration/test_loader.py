"""Loaders: exact sharded evaluation, lockstep training epochs from one pipeline per run and
its exact resume, CHW/HWC, clear input errors."""
import shutil
from pathlib import Path

import pytest
import torch
from broken_images import cut_after_header, random_bytes

from dali_pixmix.data.checks import UnreadableImageError
from dali_pixmix.distributed import DistInfo
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.pipelines.loaders import LoaderStateError, make_eval_loader, make_train_loader
from dali_pixmix.pipelines.stage import CutoutStage, PixMixStage

pytestmark = pytest.mark.integration

CROP = 32


def rank(r, world):
    return DistInfo(rank=r, local_rank=r, world_size=world)


def train_files(root):
    return sorted((root / "train").rglob("*.JPEG"))


def test_two_shards_cover_an_evaluation_epoch_exactly_once(tiny_imagenet):
    files = train_files(tiny_imagenet)[:19]  # 19 = 9 + 10: not divisible by batch x shards
    labels = list(range(len(files)))  # label = file index, to identify every sample
    seen, counts = [], []
    for r in range(2):
        loader = make_eval_loader(files=files, labels=labels, batch_size=4, dist=rank(r, 2),
                                  resize=40, crop=CROP)
        batches = [y.tolist() for _, y in loader]
        assert len(batches) == len(loader)
        assert sum(len(b) for b in batches) == loader.num_samples
        assert loader.dataset_size == 19
        assert [y.tolist() for _, y in loader] == batches  # next epoch: same exact order
        counts.append(loader.num_samples)
        seen += sum(batches, [])
    assert sorted(seen) == labels  # every picture once, no padding duplicates
    assert counts == [9, 10]


def test_eval_batches_are_float_nchw_on_cpu_with_int64_labels(tiny_imagenet):
    loader = make_eval_loader(file_root=tiny_imagenet / "val", batch_size=5, dist=rank(0, 1),
                              resize=40, crop=CROP, dtype="float16")
    images, labels = next(iter(loader))
    assert images.shape == (5, 3, CROP, CROP) and images.dtype == torch.float16
    assert labels.shape == (5,) and labels.dtype == torch.int64
    assert images.device == torch.device("cpu") and len(loader) == 5  # 24 pictures
    for _ in loader:  # finish the epoch so the next test starts fresh
        pass


def test_channels_last_returns_the_same_values_in_channels_last_memory(tiny_imagenet):
    common = dict(file_root=tiny_imagenet / "val", batch_size=24, dist=rank(0, 1), resize=40,
                  crop=CROP)
    chw, labels = next(iter(make_eval_loader(**common)))
    nhwc, labels_cl = next(iter(make_eval_loader(**common, channels_last=True)))
    assert nhwc.shape == chw.shape == (24, 3, CROP, CROP)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nhwc, chw) and torch.equal(labels, labels_cl)


def epoch_labels(loader):
    batches = [(x.shape, y.clone()) for x, y in loader]
    assert len(batches) == len(loader)
    assert all(shape == (loader.batch_size, 3, CROP, CROP) for shape, _ in batches)
    return torch.cat([y for _, y in batches])


def test_training_ranks_step_in_lockstep_and_epochs_reshuffle(tiny_imagenet):
    # 48 pictures, 2 ranks, batch 5: each shard has 24 -> 4 full batches, the rest is dropped
    def loader(r, epoch):
        return make_train_loader(root=tiny_imagenet / "train", batch_size=5, dist=rank(r, 2),
                                 epoch=epoch, seed=0, crop=CROP, stage=None)

    for r in range(2):
        first = loader(r, epoch=0)
        assert len(first) == 4 and first.num_samples == 20 and first.dataset_size == 48
        labels = epoch_labels(first)
        assert torch.equal(epoch_labels(loader(r, epoch=0)), labels)  # rebuilt: same order
        assert not torch.equal(epoch_labels(loader(r, epoch=1)), labels)  # reshuffled


def test_one_training_loader_serves_every_epoch_in_the_epochs_order(tiny_imagenet):
    """Epoch after epoch from one pipeline: the labels of each epoch are those of a loader
    built at that epoch (the order depends on (seed, epoch) only), and leaving an epoch early
    continues it on the next iteration."""
    def loader(epoch, step=0):
        return make_train_loader(root=tiny_imagenet / "train", batch_size=5, dist=rank(1, 2),
                                 epoch=epoch, step=step, seed=4, crop=CROP, stage=None)

    persistent = loader(0)
    for epoch in range(3):
        assert (persistent.epoch, persistent.epoch_step) == (epoch, 0)
        assert torch.equal(epoch_labels(persistent), epoch_labels(loader(epoch)))
    first = next(iter(persistent))[1]
    assert (persistent.epoch, persistent.epoch_step, persistent.position) == (3, 1, 13)
    rest = torch.cat([y for _, y in persistent])
    assert torch.equal(torch.cat([first, rest]), epoch_labels(loader(3)))
    assert torch.equal(rest, torch.cat([y for _, y in loader(3, step=1)]))


@pytest.mark.parametrize("method", ["pixmix", "autoaugment", "cutout"])
def test_training_loader_resumes_from_its_state_exactly(tiny_imagenet, method):
    """A loader made from `state()` at batch k of epoch 1 yields bit-identical batches (crops,
    flips, and PixMix (a torch stage seeded per batch), AutoAugment (DALI's random ops under
    conditionals) or Cutout (squares drawn per batch, erased by DALI)) to the loader that went
    on; without the state only the order is equal."""
    gen = torch.Generator().manual_seed(0)
    bank = MixingBank(torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8, generator=gen))
    augment = {"pixmix": dict(stage=PixMixStage(bank, crop=CROP)),
               "cutout": dict(stage=CutoutStage(16, crop=CROP)),
               "autoaugment": dict(stage=None, auto_augment=True)}[method]
    common = dict(root=tiny_imagenet / "train", batch_size=6, dist=rank(0, 1), seed=3,
                  crop=CROP, num_threads=1, **augment)
    going = make_train_loader(**common)
    for _ in going:  # epoch 0
        pass
    batches = iter(going)
    for _ in range(3):  # into epoch 1; DALI has prefetched further
        next(batches)
    state, position = going.state(), going.position
    ahead = [(x.clone(), y.clone()) for _ in range(2) for x, y in going]  # into epoch 2
    at = dict(epoch=position // len(going), step=position % len(going))
    restored = make_train_loader(**common, **at, dali_state=state)
    again = [(x, y) for _ in range(2) for x, y in restored][:len(ahead)]
    assert len(again) == len(ahead) == 2 * len(going) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ahead, again))
    fresh = make_train_loader(**common, **at)
    firsts = [(x, y) for x, y in fresh]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(ahead, firsts))
    assert not torch.equal(ahead[0][0], firsts[0][0])  # other crop/flip draws
    plain = {**common, "stage": None, "auto_augment": False}
    with pytest.raises(LoaderStateError, match="checkpoint"):
        make_train_loader(**plain, **at, dali_state=state)  # another graph


def test_train_loader_runs_the_pixmix_stage(tiny_imagenet):
    bank = MixingBank(torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8))
    common = dict(root=tiny_imagenet / "train", batch_size=6, dist=rank(0, 1), seed=7,
                  crop=CROP, channels_last=True)
    plain, _ = next(iter(make_train_loader(**common, stage=None)))
    mixed, _ = next(iter(make_train_loader(**common, stage=PixMixStage(bank, crop=CROP))))
    assert mixed.shape == plain.shape == (6, 3, CROP, CROP)
    assert mixed.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(mixed, plain)


def test_a_bad_file_read_after_leaving_a_loop_early_is_named(tiny_imagenet, tmp_path):
    """Iterating again after leaving an evaluation loop continues the epoch; a file DALI cannot
    parse further on is found among the files of the batches actually being read."""
    junk = random_bytes(tmp_path / "junk.JPEG")
    files = train_files(tiny_imagenet)[:8] + [junk] + train_files(tiny_imagenet)[8:9]
    loader = make_eval_loader(files=files, labels=[0] * len(files), batch_size=2,
                              dist=rank(0, 1), resize=40, crop=CROP)
    batches = iter(loader)
    next(batches), next(batches)  # two batches, then the loop is left
    with pytest.raises(UnreadableImageError) as caught:
        for _ in loader:  # batches 3 and 4 read, batch 5 holds the junk
            pass
    assert caught.value.files == [junk]


def test_batch_larger_than_a_shard_is_a_clear_error(tiny_imagenet):
    with pytest.raises(ValueError, match="too few .* lower the batch size"):
        make_train_loader(root=tiny_imagenet / "train", batch_size=30, dist=rank(0, 2),
                          crop=CROP, stage=None)


def test_input_errors_name_the_problem(tmp_path, tiny_imagenet):
    dist = rank(0, 1)
    with pytest.raises(FileNotFoundError, match="missing_root"):
        make_eval_loader(file_root=tmp_path / "missing_root", batch_size=2, dist=dist)
    empty = tmp_path / "tree"
    (empty / "a_class").mkdir(parents=True)
    (empty / "b_class").mkdir()
    first = next(iter(train_files(tiny_imagenet)))
    (empty / "a_class" / "x.JPEG").write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="b_class"):
        make_train_loader(root=empty, batch_size=1, dist=dist, stage=None)
    listing = empty / "list.txt"
    listing.write_text("a_class/x.JPEG 0\n\na_class/gone.JPEG 1\n")
    with pytest.raises(FileNotFoundError, match="list.txt:3"):
        make_eval_loader(file_list=listing, batch_size=1, dist=dist)
    with pytest.raises(FileNotFoundError, match="nowhere.JPEG"):
        make_eval_loader(files=[Path(tmp_path / "nowhere.JPEG")], labels=[0], batch_size=1,
                         dist=dist)
    with pytest.raises(ValueError, match="2 files but 1 labels"):
        make_eval_loader(files=[first, first], labels=[0], batch_size=1, dist=dist)


def test_an_error_inside_the_training_stage_surfaces_as_itself(tiny_imagenet, tmp_path):
    """The method's own exception (here PixMix's check of beta), raised inside DALI's python
    stage, reaches the caller as itself: before, it came out as "DALI failed while reading 18
    training images" after every image had been decoded again one at a time."""
    bank = MixingBank(torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8))
    stage = PixMixStage(bank, beta=-1.0, crop=CROP)  # what pixmix.beta=-1 used to reach
    with pytest.raises(ValueError, match=r"^beta must be > 0, got -1.0$"):
        loader = make_train_loader(root=tiny_imagenet / "train", batch_size=6, dist=rank(0, 1),
                                   seed=0, crop=CROP, num_threads=1, stage=stage)
        next(iter(loader))
    # a later failure of another pipeline is its own, never a stage error recorded before it
    # (DALI may run a failing stage on batches it prefetched after the one reported)
    with pytest.raises(ValueError, match="beta must be > 0"):
        stage([torch.zeros(CROP, CROP, 3, dtype=torch.uint8)] * 2)  # leaves its record
    bad = tmp_path / "train"
    shutil.copytree(tiny_imagenet / "train", bad)
    victim = sorted(next(bad.iterdir()).iterdir())[0]
    cut_after_header(victim)
    fine = PixMixStage(bank, crop=CROP)
    with pytest.raises(UnreadableImageError, match=str(victim)):
        for _ in make_train_loader(root=bad, batch_size=6, dist=rank(0, 1), seed=0, crop=CROP,
                                   num_threads=1, stage=fine):
            pass
