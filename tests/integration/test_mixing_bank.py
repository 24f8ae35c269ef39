"""MixingBank: DALI decoding against PIL, one-gather crops, .npy cache, clear errors."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_pixmix.mixing.bank import MixingBank, load_or_build_bank

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def pil_square(path, size):
    """Independent reference: shorter side to `size` (bilinear, antialiased), centre crop."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                     Image.BILINEAR)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def write_pictures(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        smooth = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(smooth).resize((w, h), Image.BILINEAR)
        paths.append(folder / f"pic_{i:02d}.png")
        img.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def folder_bank(tiny_mixing_dir):
    return MixingBank.from_folder(tiny_mixing_dir, size=48, batch_size=5)


def test_folder_bank_matches_pil_resize_and_centre_crop(tiny_mixing_dir, folder_bank):
    files = sorted(p for p in tiny_mixing_dir.rglob("*") if p.suffix in (".png", ".jpg"))
    assert len(folder_bank) == len(files) == 12  # nested sub-folders, PNG and JPEG
    assert folder_bank.images.shape == (12, 48, 48, 3) and folder_bank.images.dtype == torch.uint8
    assert folder_bank.size == 48 and folder_bank.device == torch.device("cpu")
    for i, path in enumerate(files):
        diff = np.abs(folder_bank.images[i].numpy().astype(int) - pil_square(path, 48))
        assert diff.mean() < 6, path  # resampling filters differ slightly, content must not


def test_file_list_bank_equals_folder_bank(tiny_mixing_dir, folder_bank, tmp_path):
    from dali_pixmix.data.file_lists import make_file_list

    listing = tmp_path / "mixing.txt"
    make_file_list(tiny_mixing_dir, listing, root=tiny_mixing_dir, labels="zero", progress=False)
    bank = MixingBank.from_file_list(listing, root=tiny_mixing_dir, size=48)
    assert torch.equal(bank.images, folder_bank.images)


def test_non_square_pictures_are_resized_by_shorter_side_and_centre_cropped(tmp_path):
    paths = write_pictures(tmp_path / "mix", [(40, 100), (90, 30), (64, 64)])
    bank = MixingBank.from_folder(tmp_path / "mix", size=32)
    for i, path in enumerate(paths):
        diff = np.abs(bank.images[i].numpy().astype(int) - pil_square(path, 32))
        assert diff.mean() < 4, path


def find_crop(images, crop_img):
    """All (i, y, x) such that images[i, y:y+c, x:x+c] == crop_img (brute force)."""
    c, s = crop_img.shape[0], images.shape[1]
    return [(i, y, x) for i in range(images.shape[0]) for y in range(s - c + 1)
            for x in range(s - c + 1) if np.array_equal(images[i, y:y + c, x:x + c], crop_img)]


def test_sampled_crops_are_real_crops_of_bank_pictures():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 12, 12, 3), dtype=torch.uint8, generator=gen)
    bank = MixingBank(images)
    crops = bank.sample(64, crop=8, generator=torch.Generator().manual_seed(1))
    assert crops.shape == (64, 8, 8, 3) and crops.dtype == torch.uint8
    picks, tops, lefts = set(), set(), set()
    for crop in crops.numpy():
        matches = find_crop(images.numpy(), crop)
        assert len(matches) == 1
        i, y, x = matches[0]
        picks.add(i), tops.add(y), lefts.add(x)
    assert picks == set(range(5))  # every picture is drawn
    assert tops == set(range(5)) and lefts == set(range(5))  # every offset 0..S-c occurs


def test_sample_is_reproducible_with_a_generator_and_varies_without_reuse():
    bank = MixingBank(torch.randint(0, 256, (20, 16, 16, 3), dtype=torch.uint8))
    a = bank.sample(8, 8, torch.Generator().manual_seed(3))
    b = bank.sample(8, 8, torch.Generator().manual_seed(3))
    c = bank.sample(8, 8, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def mapped_file_of(address):
    """The file a process memory mapping at `address` comes from (Linux /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else None
    return None


def test_save_and_load_round_trip_is_memory_mapped(tmp_path, folder_bank):
    path = folder_bank.save(tmp_path / "bank.npy")
    loaded = MixingBank.load(path)
    assert torch.equal(loaded.images, folder_bank.images)
    assert not list(tmp_path.glob("*.partial.npy"))  # written atomically
    if not Path("/proc/self/maps").exists():
        pytest.skip("no /proc/self/maps to check the memory map")
    # Zero copy: the tensor's memory is the file mapping itself, not a private array.
    assert mapped_file_of(loaded.images.data_ptr()) == str(path.resolve())
    copied = MixingBank.load(path, pin_memory=False).images.clone()
    assert mapped_file_of(copied.data_ptr()) != str(path.resolve())


def test_load_or_build_bank_builds_once_then_reads_the_cache(tmp_path, capsys):
    write_pictures(tmp_path / "mix" / "a", [(40, 50), (50, 40)])
    cache = tmp_path / "cache" / "bank.npy"
    built = load_or_build_bank(tmp_path / "mix", cache=cache, size=32)
    assert cache.is_file() and len(built) == 2
    stamp = cache.stat().st_mtime_ns
    cached = load_or_build_bank(tmp_path / "mix", cache=cache, size=32)
    assert torch.equal(cached.images, built.images) and cache.stat().st_mtime_ns == stamp
    assert "note:" not in capsys.readouterr().err  # reused without a note
    for p in (tmp_path / "mix" / "a").iterdir():
        p.unlink()  # a saved bank given as the source needs no pictures any more
    assert torch.equal(load_or_build_bank(cache, size=32).images, built.images)
    with pytest.raises(ValueError, match="stores 32 px pictures but 48"):
        load_or_build_bank(cache, size=48)


def test_a_cache_built_from_other_pictures_is_rebuilt_with_a_note(tmp_path, capsys):
    """The cache records what it was built from: another mixing set (the paper's Table 4),
    changed files or another picture size rebuild it, saying why; before, only the picture
    size was checked and a run silently trained on the old set's pictures."""
    write_pictures(tmp_path / "fractals", [(40, 50), (50, 40)])
    write_pictures(tmp_path / "fvis", [(48, 48), (60, 40), (40, 40)])
    cache = tmp_path / "bank.npy"
    first = load_or_build_bank(tmp_path / "fractals", cache=cache, size=32)
    changes = [(tmp_path / "fvis", 32, f"it was built from {tmp_path / 'fractals'}"),
               (tmp_path / "fvis", 24, "it holds 32 px pictures, 24 px are asked for")]
    for source, size, why in changes:
        bank = load_or_build_bank(source, cache=cache, size=size)
        assert bank.images.shape == (3, size, size, 3)
        assert MixingBank.load(cache).images.shape == (3, size, size, 3)
        notes = re.findall(r"note: [^\n]*", capsys.readouterr().err)
        assert notes == [f"note: rebuilding the mixing bank cache {cache}: {why}"]
    write_pictures(tmp_path / "fvis" / "more", [(44, 44)])  # the set's files change
    bank = load_or_build_bank(tmp_path / "fvis", cache=cache, size=24)
    assert torch.equal(bank.images, MixingBank.from_folder(tmp_path / "fvis", size=24).images)
    assert "the mixing set's files changed (3 pictures then, 4 now" in capsys.readouterr().err
    (tmp_path / "bank.npy.json").unlink()  # a cache written before records existed
    load_or_build_bank(tmp_path / "fvis", cache=cache, size=24)
    assert "it does not record what it was built from" in capsys.readouterr().err
    assert len(first) == 2 and len(load_or_build_bank(cache, size=24)) == 4


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_writing_the_bank_names_the_file_and_leaves_nothing(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    import errno

    write_pictures(tmp_path / "mix", [(40, 50), (50, 40)])
    cache = tmp_path / "bank.npy"
    partial = tmp_path / "bank.npy.partial.npy"
    partial.symlink_to("/dev/full")
    with pytest.raises(OSError) as caught:
        load_or_build_bank(tmp_path / "mix", cache=cache, size=32)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix"]  # no bank, no partial file


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images .* found under .*empty"):
        MixingBank.from_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MixingBank.from_folder(tmp_path / "missing")


def test_corrupt_picture_is_named(tmp_path):
    write_pictures(tmp_path / "mix", [(32, 32), (32, 32)])
    bad = tmp_path / "mix" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 4)
    with pytest.raises(ValueError, match="broken.jpg"):
        MixingBank.from_folder(tmp_path / "mix", size=16)


@pytest.mark.parametrize("array", [np.zeros((2, 16, 12, 3), np.uint8),
                                   np.zeros((2, 16, 16, 3), np.float32),
                                   np.zeros((2, 16, 16), np.uint8)])
def test_cached_bank_with_wrong_shape_or_dtype_is_refused(tmp_path, array):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match="bad.npy.*uint8 \\[N, S, S, 3\\]"):
        MixingBank.load(tmp_path / "bad.npy")


def test_bank_on_another_device_than_the_batch_is_refused():
    bank = MixingBank(torch.zeros((2, 16, 16, 3), dtype=torch.uint8, device="meta"))
    with pytest.raises(ValueError, match="mixing bank is on meta but the batch is on cpu"):
        bank.sample(4, 8, device="cpu")
    with pytest.raises(ValueError, match="rebuild the bank"):
        MixingBank(torch.zeros((2, 16, 16, 3), dtype=torch.uint8)).sample(1, 24)


def test_build_tool_writes_a_loadable_bank(tmp_path, tiny_mixing_dir):
    out = tmp_path / "tool_bank.npy"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "build_mixing_bank.py"),
                             str(tiny_mixing_dir), "--out", str(out), "--size", "32",
                             "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 12 pictures of 32x32 px" in result.stdout
    assert MixingBank.load(out).images.shape == (12, 32, 32, 3)


def test_build_tool_reports_a_missing_source_as_an_error(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("build_mixing_bank",
                                                  REPO / "tools" / "build_mixing_bank.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(tmp_path / "nope"), "--out", str(tmp_path / "b.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err
    assert not (tmp_path / "b.npy").exists()


def test_bank_from_two_folders_is_both_banks_in_order_with_duplicates_once(tmp_path):
    write_pictures(tmp_path / "fractals", [(40, 40), (48, 40), (40, 56)], seed=1)
    write_pictures(tmp_path / "fvis", [(32, 32), (64, 48)], seed=2)
    first = MixingBank.from_folder(tmp_path / "fractals", size=24)
    second = MixingBank.from_folder(tmp_path / "fvis", size=24)
    both = MixingBank.from_sources([tmp_path / "fractals", tmp_path / "fvis"], size=24)
    assert torch.equal(both.images, torch.cat([first.images, second.images]))
    # The same folder again, or reached through a file list, adds nothing.
    listing = tmp_path / "fvis.txt"
    listing.write_text("fvis/pic_01.png 0\n")
    again = MixingBank.from_sources([tmp_path / "fractals", tmp_path / "fvis",
                                     tmp_path / "fractals", listing], size=24)
    assert torch.equal(again.images, both.images)
    cached = load_or_build_bank(f"{tmp_path / 'fractals'},{tmp_path / 'fvis'}", size=24)
    assert torch.equal(cached.images, both.images)


def test_missing_or_empty_source_among_several_is_named(tmp_path):
    write_pictures(tmp_path / "fractals", [(32, 32)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="mixing source .*nope does not exist"):
        MixingBank.from_sources([tmp_path / "fractals", tmp_path / "nope"], size=16)
    with pytest.raises(ValueError, match="no images .* found under .*empty"):
        MixingBank.from_sources([tmp_path / "fractals", tmp_path / "empty"], size=16)
    np.save(tmp_path / "old.npy", np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="old.npy is a saved bank"):
        MixingBank.from_sources([tmp_path / "fractals", tmp_path / "old.npy"], size=16)


def test_build_tool_combines_several_sources(tmp_path, tiny_mixing_dir):
    write_pictures(tmp_path / "fvis", [(32, 32), (40, 40)])
    out = tmp_path / "both.npy"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "build_mixing_bank.py"),
                             str(tiny_mixing_dir), str(tmp_path / "fvis"), "--out", str(out),
                             "--size", "32", "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 14 pictures of 32x32 px" in result.stdout


def test_training_config_accepts_comma_separated_mixing_sources(tiny_imagenet, tiny_mixing_dir,
                                                               tmp_path):
    from dali_pixmix.config import load_config
    from dali_pixmix.training.setup import check_inputs

    write_pictures(tmp_path / "fvis", [(32, 32)])
    base = [f"data.train={tiny_imagenet}/train", f"data.val={tiny_imagenet}/val"]
    both = f"pixmix.mixing_set={tiny_mixing_dir},{tmp_path / 'fvis'}"
    assert len(check_inputs(load_config(None, base + [both]))[0]) > 0  # the classes
    missing = f"pixmix.mixing_set={tiny_mixing_dir},{tmp_path / 'nope'}"
    with pytest.raises(FileNotFoundError, match=f"mixing set '{tmp_path / 'nope'}' does not"):
        check_inputs(load_config(None, base + [missing]))


def test_a_file_list_naming_a_missing_picture_says_how_each_caller_points_elsewhere(
        tmp_path, capsys):
    """The fix in the message is the caller's own: the build tool's --root flag; for a
    training config (which has no root key) writing the paths from the list's folder."""
    listed = tmp_path / "lists" / "mixing.txt"
    listed.parent.mkdir()
    listed.write_text("gone.png 0\n")
    spec = importlib.util.spec_from_file_location("build_mixing_bank",
                                                  REPO / "tools" / "build_mixing_bank.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(listed), "--out", str(tmp_path / "b.npy")]) == 2
    err = capsys.readouterr().err
    assert "mixing.txt:1:" in err and "set --root if they are relative to another folder" in err
    with pytest.raises(FileNotFoundError) as caught:
        load_or_build_bank(str(listed), tmp_path / "cache.npy", size=32)
    message = str(caught.value)
    assert f"paths are relative to {listed.parent}, the list's folder" in message
    assert "root" not in message.replace(str(tmp_path), "")
