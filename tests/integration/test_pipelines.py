"""DALI CPU pipelines: labels, shapes, dtypes, normalisation against PIL, seeds, PixMix stage."""
import numpy as np
import pytest
import torch
from PIL import Image

from dali_pixmix.data.file_lists import write_file_list
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from dali_pixmix.mixing.bank import MixingBank
from dali_pixmix.pipelines.graphs import eval_pipeline, train_pipeline
from dali_pixmix.pipelines.stage import PixMixStage

pytestmark = pytest.mark.integration

CROP = 32


def run_all(pipe, batches):
    """Stack `batches` iterations of a built pipeline into numpy (images, labels)."""
    images, labels = [], []
    for _ in range(batches):
        out_images, out_labels = pipe.run()
        images.append(np.array(out_images.as_tensor()))
        labels.append(np.array(out_labels.as_tensor()).reshape(-1))
    return np.concatenate(images), np.concatenate(labels)


def val_files(root):
    classes = sorted(p for p in (root / "val").iterdir() if p.is_dir())
    files = [(f, k) for k, c in enumerate(classes) for f in sorted(c.iterdir())]
    return files


def pil_eval_reference(path, resize, crop):
    """torchvision's Resize(resize) + CenterCrop(crop) + Normalize, computed with PIL/numpy."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    img = img.resize(size, Image.BILINEAR)
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def eval_outputs(tiny_imagenet):
    files = val_files(tiny_imagenet)
    pipe = eval_pipeline(file_root=tiny_imagenet / "val", batch_size=len(files), resize=40,
                         crop=CROP)
    return files, run_all(pipe, 1)


def test_eval_labels_follow_sorted_class_folders(eval_outputs):
    files, (images, labels) = eval_outputs
    assert labels.tolist() == [k for _, k in files]
    assert labels.dtype == np.int32


def test_eval_matches_pil_resize_centre_crop_normalise(eval_outputs):
    files, (images, _) = eval_outputs
    assert images.shape == (len(files), 3, CROP, CROP) and images.dtype == np.float32
    for image, (path, _) in zip(images, files):
        diff = np.abs(image - pil_eval_reference(path, 40, CROP))
        # within ~1-3 grey levels everywhere: a one-pixel shift or a wrong scale is ~0.3 on average
        assert diff.max() < 0.05 and diff.mean() < 0.01, path


def test_no_resize_is_a_plain_centre_crop(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (41, 37, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    pipe = eval_pipeline(files=[tmp_path / "a.png"], labels=[7], batch_size=1, crop=CROP,
                         no_resize=True)
    images, labels = run_all(pipe, 1)
    # torchvision CenterCrop: top = round(4.5) = 4, left = round(2.5) = 2 (half to even)
    expected = (arr[4:36, 2:34] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # lossless PNG: exact
    np.testing.assert_allclose(images[0], expected.transpose(2, 0, 1), atol=1e-4)
    assert labels.tolist() == [7]


def test_float16_and_hwc_layout_carry_the_same_values(tiny_imagenet, eval_outputs):
    files, (reference, _) = eval_outputs
    pipe = eval_pipeline(file_root=tiny_imagenet / "val", batch_size=len(files), resize=40,
                         crop=CROP, dtype="float16", layout="HWC")
    images, _ = run_all(pipe, 1)
    assert images.dtype == np.float16 and images.shape == (len(files), CROP, CROP, 3)
    np.testing.assert_allclose(images.transpose(0, 3, 1, 2).astype(np.float32), reference,
                               atol=1e-2)


def test_file_list_and_folder_readers_agree(tiny_imagenet, tmp_path, eval_outputs):
    files, (reference, ref_labels) = eval_outputs
    entries = [(str(path.relative_to(tiny_imagenet)), k) for path, k in files]
    file_list = write_file_list(tmp_path / "val.txt", entries)
    pipe = eval_pipeline(file_list=file_list, file_root=tiny_imagenet, batch_size=len(files),
                         resize=40, crop=CROP)
    images, labels = run_all(pipe, 1)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(images, reference)


def train_batch(root, seed, stage=None, batch_size=8, **kwargs):
    pipe = train_pipeline(file_root=root / "train", batch_size=batch_size, crop=CROP, seed=seed,
                          stage=stage, **kwargs)
    return run_all(pipe, 1)


def test_train_shapes_and_seed_reproducibility(tiny_imagenet):
    a_images, a_labels = train_batch(tiny_imagenet, seed=1)
    b_images, b_labels = train_batch(tiny_imagenet, seed=1)
    c_images, _ = train_batch(tiny_imagenet, seed=2)
    assert a_images.shape == (8, 3, CROP, CROP) and a_images.dtype == np.float32
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(a_images, c_images)
    # normalised ImageNet-like statistics: values span well beyond [0, 1]
    assert a_images.min() < -1.0 and a_images.max() > 1.0


def test_train_shards_read_disjoint_files(tiny_imagenet):
    """Shard 0 and 1 of a 2-way split of the 48 training images never share a picture."""
    seen = []
    for shard in range(2):
        pipe = train_pipeline(file_root=tiny_imagenet / "train", batch_size=24, crop=CROP,
                              shard_id=shard, num_shards=2, random_shuffle=False)
        # flips and crops differ per shard; the label multiset identifies the slice read
        _, labels = run_all(pipe, 1)
        seen.append(sorted(labels.tolist()))
    assert seen[0] == [0] * 8 + [1] * 8 + [2] * 8 and seen[1] == [3] * 8 + [4] * 8 + [5] * 8


def test_random_resized_crop_and_flip_follow_the_torchvision_recipe(tmp_path):
    """A picture whose red/green channels encode x/y reveals each sample's crop box and flip."""
    size = 240
    yy, xx = np.mgrid[0:size, 0:size]
    Image.fromarray(np.stack([xx, yy, 0 * xx], -1).astype(np.uint8)).save(tmp_path / "xy.png")
    pipe = train_pipeline(files=[tmp_path / "xy.png"] * 64, labels=[0] * 64, batch_size=64,
                          crop=CROP, seed=0, random_shuffle=False)
    images, _ = run_all(pipe, 1)
    pixels = (images.transpose(0, 2, 3, 1) * IMAGENET_STD + IMAGENET_MEAN) * 255
    x, y = pixels[..., 0], pixels[..., 1]
    # sample centres span (CROP - 1) / CROP of the crop box
    width = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) * CROP / (CROP - 1)
    height = (y.max(axis=(1, 2)) - y.min(axis=(1, 2))) * CROP / (CROP - 1)
    area, aspect = width * height / size ** 2, width / height
    assert np.all(area > 0.08 * 0.9) and np.all(area < 1.0 + 0.05)
    assert np.all(aspect > 0.75 * 0.93) and np.all(aspect < 4 / 3 * 1.07)
    assert area.min() < 0.3 and area.max() > 0.6  # the scale really is random
    flipped = x[:, :, 0].mean(axis=1) > x[:, :, -1].mean(axis=1)
    assert 16 <= flipped.sum() <= 48  # p = 0.5 flips


@pytest.fixture(scope="module")
def noise_bank():
    gen = torch.Generator().manual_seed(0)
    return MixingBank(torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8, generator=gen))


def constant_bank(value):
    return MixingBank(torch.full((1, 40, 40, 3), value, dtype=torch.uint8))


def test_pixmix_stage_changes_the_same_crops(tiny_imagenet, noise_bank):
    plain, plain_labels = train_batch(tiny_imagenet, seed=3)
    mixed, mixed_labels = train_batch(tiny_imagenet, seed=3,
                                      stage=PixMixStage(noise_bank, crop=CROP, seed=0))
    again, _ = train_batch(tiny_imagenet, seed=3, stage=PixMixStage(noise_bank, crop=CROP, seed=0))
    assert mixed.shape == plain.shape and mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed_labels, plain_labels)
    np.testing.assert_array_equal(mixed, again)  # the stage is seeded
    changed = np.abs(mixed - plain).reshape(len(mixed), -1).mean(axis=1) > 1e-3
    assert changed.sum() >= len(mixed) // 2  # ~1/5 of samples get no round and no augment
    # still normalised [0, 1] pictures: the stage output is not rescaled by 255 twice
    low = (0 - np.array(IMAGENET_MEAN)) / IMAGENET_STD
    high = (1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD
    per_channel = mixed.transpose(1, 0, 2, 3).reshape(3, -1)
    assert np.all(per_channel.min(axis=1) >= low - 1e-4)
    assert np.all(per_channel.max(axis=1) <= high + 1e-4)


def test_pipeline_stage_output_is_the_normalised_pixmix_of_the_plain_crops(tiny_imagenet,
                                                                          noise_bank):
    """The stage emits the final layout / dtype itself: it must equal ImageNet normalisation
    (computed here with numpy) of pixmix() on the very crops the plain pipeline produces."""
    plain, _ = train_batch(tiny_imagenet, seed=6, layout="HWC")
    crops = np.rint((plain * IMAGENET_STD + IMAGENET_MEAN) * 255).astype(np.uint8)
    stage = PixMixStage(noise_bank, crop=CROP, seed=2)
    stage_seed = int(np.random.SeedSequence([2, 6, 0]).generate_state(1)[0])
    unit = stage.reseeded(stage_seed).apply(torch.from_numpy(crops)).numpy()  # [0, 1] HWC
    expected = (unit - np.float32(IMAGENET_MEAN)) * (1 / np.float32(IMAGENET_STD))
    chw, _ = train_batch(tiny_imagenet, seed=6, stage=stage)
    assert chw.dtype == np.float32 and chw.shape == (8, 3, CROP, CROP)
    np.testing.assert_allclose(chw, expected.transpose(0, 3, 1, 2), rtol=0, atol=1e-6)
    hwc16, _ = train_batch(tiny_imagenet, seed=6, stage=stage, dtype="float16", layout="HWC")
    assert hwc16.dtype == np.float16 and hwc16.shape == (8, CROP, CROP, 3)
    np.testing.assert_allclose(hwc16.astype(np.float32), expected, rtol=1e-3, atol=1e-3)


def test_pixmix_stage_draws_from_the_bank(tiny_imagenet):
    """Same seeds, banks of black vs white pictures: only the mixing pictures differ."""
    black, _ = train_batch(tiny_imagenet, seed=4, stage=PixMixStage(constant_bank(0), crop=CROP))
    white, _ = train_batch(tiny_imagenet, seed=4, stage=PixMixStage(constant_bank(255), crop=CROP))
    differs = np.abs(black - white).reshape(len(black), -1).max(axis=1) > 1e-3
    assert differs.sum() >= 1  # a stage that ignored the bank would give equal batches


def test_pixmix_stage_on_a_torch_batch_is_seeded_and_bounded(noise_bank):
    gen = torch.Generator().manual_seed(5)
    batch = torch.randint(0, 256, (4, CROP, CROP, 3), dtype=torch.uint8, generator=gen)
    out_a = PixMixStage(noise_bank, crop=CROP, seed=9).apply(batch)
    out_b = PixMixStage(noise_bank, crop=CROP, seed=9).apply(batch)
    out_c = PixMixStage(noise_bank, crop=CROP, seed=10).apply(batch)
    assert out_a.shape == (4, CROP, CROP, 3) and out_a.dtype == torch.float32
    assert torch.equal(out_a, out_b) and not torch.equal(out_a, out_c)
    assert out_a.min() >= 0 and out_a.max() <= 1
    with pytest.raises(ValueError, match="crop=16"):
        PixMixStage(noise_bank, crop=CROP).apply(batch[:, :16, :16])


def test_pixmix_stage_draws_depend_on_the_batch_index_alone(noise_bank):
    """Batch 3 of a stage started at batch 0 equals the first batch of the stage started at 3
    (a pipeline built at a resumed step); other batches get other draws."""
    batch = torch.randint(0, 256, (4, CROP, CROP, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    stage = PixMixStage(noise_bank, crop=CROP, seed=9)
    outputs = [stage.apply(batch) for _ in range(4)]
    late = stage.reseeded(9, start=3)
    assert torch.equal(late.apply(batch), outputs[3]) and late.batch_index == 4
    assert not torch.equal(outputs[2], outputs[3])


def test_pixmix_stage_passes_its_settings_and_bank_crops_to_pixmix(noise_bank):
    """The stage equals a direct pixmix() call with the documented generators and bank draws."""
    from dali_pixmix.augment.pixmix import pixmix

    batch = torch.randint(0, 256, (6, CROP, CROP, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(2))
    stage = PixMixStage(noise_bank, k=2, beta=3.0, severity=2, all_ops=False, seed=11, crop=CROP)

    def seeded(stream, batch_index=0):
        seed = int(np.random.SeedSequence([11, stream, batch_index]).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    mixing = noise_bank.sample(6, CROP, seeded(1))
    expected = pixmix(batch, mixing, k=2, beta=3.0, severity=2, all_ops=False,
                      generator=seeded(0))
    assert torch.equal(stage.apply(batch), expected)
    other_k = pixmix(batch, mixing, k=4, beta=3.0, severity=2, all_ops=False,
                     generator=seeded(0))
    assert not torch.equal(other_k, expected)  # the settings matter, so the check has teeth


def test_bad_arguments_are_refused(tiny_imagenet, noise_bank):
    with pytest.raises(ValueError, match="dtype"):
        eval_pipeline(file_root=tiny_imagenet / "val", batch_size=2, dtype="int8")
    with pytest.raises(ValueError, match="larger than the mixing bank"):
        PixMixStage(noise_bank, crop=64)
    with pytest.raises(ValueError, match="differs from the pipeline crop"):
        train_pipeline(file_root=tiny_imagenet / "train", batch_size=2, crop=24,
                       stage=PixMixStage(noise_bank, crop=CROP))
