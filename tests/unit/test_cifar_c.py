"""CIFAR-C / C-bar / P readers: released .npy layouts, memory maps, one-line errors."""
import numpy as np
import pytest

from dali_pixmix.data.cifar import CifarDataError
from dali_pixmix.data.cifar_c import open_cifar_c, open_cifar_cbar, open_cifar_p

pytestmark = pytest.mark.unit


def pictures(count, seed=0, extra=()):
    return np.random.default_rng(seed).integers(0, 256, (count, *extra, 32, 32, 3), np.uint8)


@pytest.fixture
def c_folder(tmp_path):
    """3 test images: contrast and gaussian_noise files of 15, labels.npy of 15 (as released)."""
    labels = np.array([4, 0, 9])
    np.save(tmp_path / "labels.npy", np.tile(labels, 5))
    np.save(tmp_path / "contrast.npy", pictures(15, 1))
    np.save(tmp_path / "gaussian_noise.npy", pictures(15, 2))
    return tmp_path


def test_opens_the_released_layout_as_memory_maps(c_folder):
    c = open_cifar_c(c_folder)
    assert list(c.files) == ["gaussian_noise", "contrast"]  # the list's order
    assert len(c.missing) == 13 and "fog" in c.missing and c.unknown == ()
    assert c.per_severity == 3
    images, labels = c.cell("contrast", 2)
    assert isinstance(images, np.memmap)
    assert np.array_equal(images, pictures(15, 1)[3:6]) and labels.tolist() == [4, 0, 9]
    assert np.array_equal(c.images("gaussian_noise"), pictures(15, 2))
    with pytest.raises(CifarDataError, match="no fog.npy"):
        c.images("fog")


def test_labels_given_once_per_test_image(c_folder):
    np.save(c_folder / "labels.npy", np.array([4, 0, 9], dtype=np.uint8))
    c = open_cifar_c(c_folder)
    assert c.labels.dtype == np.int64 and c.cell("contrast", 5)[1].tolist() == [4, 0, 9]


def test_a_length_that_is_not_5_x_the_labels(c_folder):
    np.save(c_folder / "contrast.npy", pictures(14))
    with pytest.raises(CifarDataError, match=r"contrast.npy holds 14 images but .*labels.npy has "
                                             r"15 labels: expected 5 severities x 3 images = 15"):
        open_cifar_c(c_folder)


@pytest.mark.parametrize("array,match", [
    (pictures(15).astype(np.float32), r"expected uint8 \[5 severities x n images, 32, 32, 3\]"),
    (pictures(15)[..., 0], r"got uint8 \[15, 32, 32\]"),
    (np.array([None] * 15, dtype=object), "cannot read it as a .npy array"),
])
def test_wrong_files(c_folder, array, match):
    np.save(c_folder / "contrast.npy", array, allow_pickle=True)
    with pytest.raises(CifarDataError, match=match):
        open_cifar_c(c_folder)


def test_truncated_file(c_folder):
    path = c_folder / "contrast.npy"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CifarDataError, match="contrast.npy: cannot read it .*truncated"):
        open_cifar_c(c_folder)


def test_missing_files_and_labels(c_folder, tmp_path):
    with pytest.raises(CifarDataError, match=r"lacks 13 of the 15 CIFAR-C files \(shot_noise.npy"):
        open_cifar_c(c_folder, require_all=True)
    with pytest.raises(CifarDataError, match="lacks 10 of the 10 CIFAR-C-bar files"):
        open_cifar_cbar(c_folder)
    (c_folder / "labels.npy").unlink()
    with pytest.raises(CifarDataError, match="has no labels.npy"):
        open_cifar_c(c_folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_cifar_c(tmp_path / "nowhere")


def test_labels_outside_the_model_classes(c_folder):
    open_cifar_c(c_folder, num_classes=10)
    with pytest.raises(CifarDataError, match="labels run from 0 to 9, but the model has 5"):
        open_cifar_c(c_folder, num_classes=5)


def test_extras_and_unknown_files_never_join_the_list(c_folder):
    np.save(c_folder / "speckle_noise.npy", pictures(15))
    np.save(c_folder / "my_corruption.npy", pictures(15))
    assert open_cifar_c(c_folder).unknown == ("my_corruption.npy", "speckle_noise.npy")
    c = open_cifar_c(c_folder, extras=True)
    assert list(c.files)[-1] == "speckle_noise" and c.unknown == ("my_corruption.npy",)


def test_cbar_names(tmp_path):
    np.save(tmp_path / "labels.npy", np.arange(10))
    np.save(tmp_path / "transverse_chromatic_abberation.npy", pictures(10))
    np.save(tmp_path / "lines.npy", pictures(10))
    c = open_cifar_cbar(tmp_path)
    assert list(c.files) == ["lines", "transverse_chromatic_abberation"]
    assert c.cell("lines", 1)[1].tolist() == [0, 1]


def test_perturbations(tmp_path):
    np.save(tmp_path / "gaussian_noise.npy", pictures(2, 1, (4,)))
    np.save(tmp_path / "gaussian_noise_2.npy", pictures(2, 2, (4,)))
    np.save(tmp_path / "translate.npy", pictures(3, 3, (2,)))
    p = open_cifar_p(tmp_path)
    assert list(p.files) == ["gaussian_noise", "translate"] and "spatter" in p.missing
    assert p.unknown == () and p.videos("translate").shape == (3, 2, 32, 32, 3)
    hard = open_cifar_p(tmp_path, perturbations=("gaussian_noise",), difficulty=2)
    assert np.array_equal(hard.videos("gaussian_noise"), pictures(2, 2, (4,)))
    with pytest.raises(CifarDataError, match="translate.npy: 2 frames are too few for difficu"):
        open_cifar_p(tmp_path, difficulty=2)
    np.save(tmp_path / "rotate.npy", pictures(3, 3))
    with pytest.raises(CifarDataError, match=r"expected uint8 \[videos, frames, 32, 32, 3\]"):
        open_cifar_p(tmp_path)
    with pytest.raises(CifarDataError, match="lacks 10 of the 10 CIFAR-P files"):
        (tmp_path / "empty").mkdir()
        open_cifar_p(tmp_path / "empty")
