"""The generated CIFAR data: both official formats, learnable pictures, C / C-bar / P stand-ins."""
import pickle

import numpy as np
import pytest
from entry_points import load_script
from PIL import Image

from dali_pixmix.data.cifar import CifarDataError, read_cifar
from dali_pixmix.data.cifar_c import open_cifar_c, open_cifar_cbar, open_cifar_p
from dali_pixmix.evaluation.synthetic_cifar import (
    CIFAR10_CLASSES,
    checkerboard_cutout,
    lines,
    make_synthetic_cifar,
    make_synthetic_cifar_suite,
    perturbation_frames,
    synthetic_split,
)
from dali_pixmix.evaluation.synthetic_corruptions import CORRUPTIONS

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """10 classes, 3 train + 2 test pictures each, both formats, C / C-bar / P (4 frames)."""
    root = tmp_path_factory.mktemp("cifar_suite")
    return make_synthetic_cifar_suite(root, "cifar10", train_per_class=3, test_per_class=2,
                                      seed=3, frames=4, progress=False)


def test_both_formats_read_back_to_identical_arrays(suite):
    root = suite["root"]
    for split, per_class in (("train", 3), ("test", 2)):
        py = read_cifar(root / "cifar-10-batches-py", "cifar10", split)
        binary = read_cifar(root / "cifar-10-batches-bin", "cifar10", split)
        assert py.layout.format == "python" and binary.layout.format == "binary"
        assert np.array_equal(py.images, binary.images)
        assert np.array_equal(py.labels, binary.labels)
        assert py.classes == binary.classes == list(CIFAR10_CLASSES)
        assert py.labels.tolist() == list(range(10)) * per_class     # i-major: balanced prefixes
        assert np.array_equal(py.images, synthetic_split(10, per_class, 3, split)[0])


def test_cifar100_layout_in_both_formats(tmp_path):
    make_synthetic_cifar(tmp_path, "cifar100", train_per_class=1, test_per_class=1, seed=0,
                         progress=False)
    py = read_cifar(tmp_path, "cifar100", "train", "python")
    binary = read_cifar(tmp_path, "cifar100", "train", "binary")
    assert len(py) == 100 and np.array_equal(py.images, binary.images)
    assert np.array_equal(py.labels, binary.labels) and py.classes[99] == "class_099"
    train = pickle.loads((tmp_path / "cifar-100-python/train").read_bytes(), encoding="latin1")
    meta = pickle.loads((tmp_path / "cifar-100-python/meta").read_bytes(), encoding="latin1")
    assert set(train) == {"batch_label", "fine_labels", "coarse_labels", "data", "filenames"}
    assert train["coarse_labels"][:10] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert set(meta) == {"fine_label_names", "coarse_label_names"}
    assert (tmp_path / "cifar-100-binary/train.bin").stat().st_size == 100 * 3074


def test_python_files_hold_what_the_official_ones_hold(suite):
    folder = suite["root"] / "cifar-10-batches-py"
    raw = (folder / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2, as the official files
    batch = pickle.loads(raw, encoding="latin1")  # our own file: plain pickle is safe here
    assert set(batch) == {"batch_label", "labels", "data", "filenames"}
    data, images = batch["data"], synthetic_split(10, 3, 3, "train")[0]
    assert data.dtype == np.uint8 and data.shape == (6, 3072)  # 30 pictures in 5 batches
    for c in range(3):  # each row: the 1024 red values, then green, then blue, row-major
        assert np.array_equal(data[:, 1024 * c:1024 * (c + 1)].reshape(6, 32, 32),
                              images[:6, :, :, c])
    assert batch["labels"] == [0, 1, 2, 3, 4, 5] and isinstance(batch["labels"], list)
    meta = pickle.loads((folder / "batches.meta").read_bytes(), encoding="latin1")
    assert meta["label_names"] == list(CIFAR10_CLASSES) and meta["num_vis"] == 3072
    assert (suite["root"] / "cifar-10-batches-bin/test_batch.bin").stat().st_size == 20 * 3073


def test_reruns_are_free_and_foreign_folders_are_never_overwritten(suite, tmp_path):
    batch = suite["root"] / "cifar-10-batches-py" / "data_batch_1"
    before = batch.stat().st_mtime_ns
    make_synthetic_cifar_suite(suite["root"], "cifar10", train_per_class=3, test_per_class=2,
                               seed=3, frames=4, progress=False)
    assert batch.stat().st_mtime_ns == before
    with pytest.raises(CifarDataError, match="generated with other settings"):
        make_synthetic_cifar(suite["root"], "cifar10", train_per_class=3, test_per_class=2,
                             seed=4, progress=False)
    real = tmp_path / "cifar-10-batches-bin"
    real.mkdir()
    (real / "data_batch_1.bin").write_bytes(b"users' data")
    with pytest.raises(CifarDataError, match="not generated here"):
        make_synthetic_cifar(tmp_path, "cifar10", progress=False)
    assert (real / "data_batch_1.bin").read_bytes() == b"users' data"


def _hue_histogram(image):
    """Hue histogram of saturated pixels, by PIL (independent of the generator's HSV code)."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).reshape(-1, 3).astype(np.float64)
    hist = np.histogram(hsv[hsv[:, 1] > 150, 0], bins=36, range=(0, 256))[0].astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def test_pictures_are_learnable_at_32_px():
    train_images, train_labels = synthetic_split(10, 12, 0, "train")
    test_images, test_labels = synthetic_split(10, 6, 0, "test")
    feats = np.array([_hue_histogram(x) for x in train_images])
    centroids = np.stack([feats[train_labels == k].mean(0) for k in range(10)])
    test_feats = np.array([_hue_histogram(x) for x in test_images])
    predicted = ((test_feats[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == test_labels).mean() > 0.8  # chance: 0.1


def test_c_set_has_the_released_layout_and_grows_with_severity(suite):
    c = open_cifar_c(suite["c"])
    clean, labels = synthetic_split(10, 2, 3, "test")
    assert list(c.files) == list(CORRUPTIONS) and c.per_severity == 20
    assert c.labels.tolist() == labels.tolist() * 5
    for name in CORRUPTIONS:
        change = [np.abs(c.cell(name, s)[0].astype(float) - clean).mean() for s in range(1, 6)]
        assert all(b >= a - 0.5 for a, b in zip(change, change[1:])), (name, change)
        assert change[4] > change[0] > 0, (name, change)
    cbar = open_cifar_cbar(suite["cbar"])
    assert list(cbar.files) == ["checkerboard_cutout", "lines"] and cbar.per_severity == 20


def test_cbar_standins_grow_with_severity():
    white = np.full((32, 32, 3), 255, np.uint8)
    cut = [(checkerboard_cutout(white, s, np.random.default_rng(0)) == 0).all(-1).mean()
           for s in range(1, 6)]
    for s, fraction in enumerate(cut, 1):  # q x q of every other 8 x 8 cell
        q = (2, 3, 4, 5, 6)[s - 1]
        assert 0.6 * q * q / 128 < fraction < 1.6 * q * q / 128, (s, fraction)
    drawn = [(lines(white, s, np.random.default_rng(1)) == 0).all(-1).sum() for s in range(1, 6)]
    assert drawn == sorted(drawn) and drawn[0] >= 32 and drawn[4] > drawn[0]


def test_p_set_sequences(suite):
    p = open_cifar_p(suite["p"])
    clean = synthetic_split(10, 2, 3, "test")[0]
    assert list(p.files) == ["gaussian_noise", "brightness", "translate"]
    noise = p.videos("gaussian_noise")
    assert noise.shape == (20, 4, 32, 32, 3) and np.array_equal(noise[:, 0], clean)
    assert not np.array_equal(noise[:, 1], noise[:, 2])  # fresh noise every frame
    moved = p.videos("translate")
    for t in range(4):  # shifted t px to the right, the left column repeated
        assert np.array_equal(moved[:, t, :, t:], clean[:, :, :32 - t])
        assert np.all(moved[:, t, :, :t] == clean[:, :, :1])
    bright = p.videos("brightness").astype(int)
    assert np.array_equal(bright[:, 0], clean) and np.all(np.diff(bright, axis=1) >= 0)
    with pytest.raises(ValueError, match="no stand-in"):
        perturbation_frames(clean[0], "rotate", 4, 0, 0)


def test_command_line(tmp_path, capsys):
    tool = load_script("tools/make_synthetic_cifar.py")
    assert tool.main([str(tmp_path / "d"), "--num-classes", "3", "--train-per-class", "2",
                      "--test-per-class", "1", "--no-corruptions", "--no-progress"]) == 0
    assert "synthetic cifar10: 3 classes, 2+1 pictures" in capsys.readouterr().out
    assert read_cifar(tmp_path / "d", "cifar10", "test", "binary").classes[2] == "class_002"
    assert tool.main([str(tmp_path / "e"), "--num-classes", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: need 2..256 classes")
