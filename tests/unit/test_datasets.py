"""Benchmark folder trees: discovery and validation on generated trees (empty files: only names
matter here)."""
from pathlib import Path

import numpy as np
import pytest

from dali_pixmix.evaluation import datasets

pytestmark = pytest.mark.unit

WNIDS = ["n01440764", "n01443537", "n01484850"]


def touch_tree(root: Path, wnids=WNIDS, per_class=2):
    for w in wnids:
        (root / w).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / w / f"img_{i}.JPEG").write_bytes(b"")


def corruption_tree(root: Path, corruptions, severities=("1", "2", "3", "4", "5")):
    for c in corruptions:
        for s in severities:
            touch_tree(root / c / s)


def test_class_tree_labels_follow_model_order(tmp_path):
    touch_tree(tmp_path)
    (tmp_path / "README.txt").write_text("not a class")
    s = datasets.class_tree(tmp_path)
    assert len(s.files) == 6 and s.classes == tuple(WNIDS)
    model_classes = ["n09999999", WNIDS[2], WNIDS[0], WNIDS[1]]
    np.testing.assert_array_equal(s.labels(model_classes), [2, 2, 3, 3, 1, 1])
    with pytest.raises(ValueError, match="unknown to the model"):
        s.labels(WNIDS[:2])


def test_empty_class_folder_is_an_error(tmp_path):
    touch_tree(tmp_path)
    (tmp_path / "n09999999").mkdir()
    with pytest.raises(ValueError, match="hold no images"):
        datasets.class_tree(tmp_path)


def test_class_tree_follows_the_one_discovery_rule(tmp_path):
    """Images at any depth below a class folder count; hidden files (macOS `._x.JPEG`
    resource forks) and hidden folders never do; extensions are the package's list."""
    touch_tree(tmp_path, per_class=1)
    nested = tmp_path / WNIDS[1] / "batch_2" / "deeper"
    nested.mkdir(parents=True)
    (nested / "img_9.png").write_bytes(b"")
    (nested / "img_10.TIFF").write_bytes(b"")
    (tmp_path / WNIDS[0] / "._img_0.JPEG").write_bytes(b"")
    (tmp_path / WNIDS[0] / ".cache").mkdir()
    (tmp_path / WNIDS[0] / ".cache" / "x.jpg").write_bytes(b"")
    (tmp_path / ".Trashes").mkdir()
    (tmp_path / ".Trashes" / "y.jpg").write_bytes(b"")
    s = datasets.class_tree(tmp_path)
    names = [Path(f).relative_to(tmp_path).as_posix() for f in s.files]
    assert names == [f"{WNIDS[0]}/img_0.JPEG", f"{WNIDS[1]}/batch_2/deeper/img_10.TIFF",
                     f"{WNIDS[1]}/batch_2/deeper/img_9.png", f"{WNIDS[1]}/img_0.JPEG",
                     f"{WNIDS[2]}/img_0.JPEG"]
    assert s.wnids == (WNIDS[0], WNIDS[1], WNIDS[1], WNIDS[1], WNIDS[2])
    only_nested = tmp_path / "only_nested"
    (only_nested / WNIDS[0] / "sub").mkdir(parents=True)
    (only_nested / WNIDS[0] / "sub" / "a.jpg").write_bytes(b"")
    assert len(datasets.class_tree(only_nested).files) == 1  # not an "empty" class


def test_images_beside_the_class_folders_are_an_error(tmp_path):
    touch_tree(tmp_path)
    (tmp_path / "stray.JPEG").write_bytes(b"")
    with pytest.raises(ValueError, match="images outside class folders.*stray.JPEG"):
        datasets.class_tree(tmp_path)


def test_corruption_cells_and_image_sets_skip_hidden_entries(tmp_path):
    corruption_tree(tmp_path / "c", ["fog"])
    (tmp_path / "c" / ".DS_Store").write_bytes(b"")
    (tmp_path / "c" / "._fog").mkdir()  # hidden folder: not an unknown corruption
    (tmp_path / "c" / "fog" / "3" / WNIDS[0] / "._img_0.JPEG").write_bytes(b"")
    cells = datasets.imagenet_c_cells(tmp_path / "c")
    assert len(cells) == 5 and all(len(c.images.files) == 6 for c in cells)
    touch_tree(tmp_path / "ood", per_class=1)
    (tmp_path / "ood" / WNIDS[0] / "._img_0.JPEG").write_bytes(b"")
    assert len(datasets.image_set(tmp_path / "ood")) == 3


def test_imagenet_c_cells_sorted_and_validated(tmp_path):
    corruption_tree(tmp_path, ["fog", "gaussian_noise", "spatter"])
    cells = datasets.imagenet_c_cells(tmp_path)
    # order follows the canonical list (test corruptions first, then extras), severities 1..5
    assert [c.key for c in cells[:6]] == ["gaussian_noise/1", "gaussian_noise/2",
                                          "gaussian_noise/3", "gaussian_noise/4",
                                          "gaussian_noise/5", "fog/1"]
    assert cells[-1].key == "spatter/5" and len(cells) == 15
    only = datasets.imagenet_c_cells(tmp_path, only=["fog"])
    assert {c.corruption for c in only} == {"fog"}
    with pytest.raises(ValueError, match="missing: \\['snow'\\]"):
        datasets.imagenet_c_cells(tmp_path, only=["snow"])


def test_imagenet_c_rejects_unknown_corruption_and_bad_severities(tmp_path):
    corruption_tree(tmp_path / "a", ["fog", "fogg"])
    with pytest.raises(ValueError, match="unknown ImageNet-C corruption folders \\['fogg'\\]"):
        datasets.imagenet_c_cells(tmp_path / "a")
    corruption_tree(tmp_path / "b", ["fog"], severities=("1", "2", "3", "4"))
    with pytest.raises(ValueError, match="severity folders 1..5"):
        datasets.imagenet_c_cells(tmp_path / "b")


def test_unequal_cells_are_suspicious(tmp_path):
    corruption_tree(tmp_path, ["fog", "snow"])
    (tmp_path / "snow" / "3" / WNIDS[0] / "img_0.JPEG").unlink()
    with pytest.raises(ValueError, match="unequal image counts.*snow/3"):
        datasets.imagenet_c_cells(tmp_path)


def test_cbar_float_severities_sorted_numerically(tmp_path):
    # lexicographic order would put "10.0" before "2.35"
    corruption_tree(tmp_path, ["sparkles"], severities=("2.35", "10.0", "0.5", "3", "7.25"))
    cells = datasets.imagenet_cbar_cells(tmp_path)
    assert [(c.folder, c.severity) for c in cells] == [
        ("0.5", 1), ("2.35", 2), ("3", 3), ("7.25", 4), ("10.0", 5)]
    with pytest.raises(ValueError, match="5 severity folders"):
        datasets.severity_map(["1", "2", "x", "4", "5"], "somewhere")


def test_image_set_folder_and_file_list(tmp_path):
    touch_tree(tmp_path / "ood" / "deep", per_class=1)
    assert len(datasets.image_set(tmp_path / "ood")) == 3
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\nood/deep/{WNIDS[0]}/img_0.JPEG\n\n")
    listed = tmp_path / "ood" / "deep" / WNIDS[0] / "img_0.JPEG"
    assert datasets.image_set(lst) == (str(listed.resolve()),)
    lst.write_text("ood/missing.jpg\n")
    with pytest.raises(ValueError, match="missing files"):
        datasets.image_set(lst)
    with pytest.raises(FileNotFoundError, match="image set not found"):
        datasets.image_set(tmp_path / "nope")


def test_listed_once_lists_each_folder_once_within_its_block(tmp_path):
    touch_tree(tmp_path / "val")
    corruption_tree(tmp_path / "c", ["fog"])
    with datasets.listed_once():
        first = datasets.class_tree(str(tmp_path / "val"), name="val")
        cells = datasets.imagenet_c_cells(str(tmp_path / "c"))
        (tmp_path / "val" / WNIDS[0] / "img_9.JPEG").write_bytes(b"")  # added after listing
        (tmp_path / "c" / "fog" / "3" / WNIDS[0] / "img_9.JPEG").write_bytes(b"")
        assert datasets.class_tree(str(tmp_path / "val"), name="val") is first
        assert datasets.imagenet_c_cells(str(tmp_path / "c")) is cells
        assert len(datasets.class_tree(str(tmp_path / "val"), name="other").files) == 7
    assert len(datasets.class_tree(str(tmp_path / "val"), name="val").files) == 7
    with pytest.raises(ValueError, match="unequal image counts"):  # listed afresh outside
        datasets.imagenet_c_cells(str(tmp_path / "c"))
