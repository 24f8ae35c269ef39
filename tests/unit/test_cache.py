"""The evaluation's prediction cache: atomic files, fingerprint check, unreadable = recompute."""
import logging

import numpy as np
import pytest

from dali_pixmix.evaluation import cache

pytestmark = pytest.mark.unit

ARRAYS = {"labels": np.arange(5), "scores": np.linspace(0, 1, 5, dtype=np.float32)}


def test_round_trip_and_fingerprint(tmp_path, caplog):
    path = cache.cache_file(tmp_path / "cache", "gaussian_noise/3")
    assert path.name == "gaussian_noise_3.npz"
    cache.save(path, "key-a", ARRAYS)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    got = cache.load(path, "key-a", ["labels", "scores"])
    assert all(np.array_equal(got[k], v) for k, v in ARRAYS.items())
    with caplog.at_level(logging.WARNING, logger="dali_pixmix.evaluation.cache"):
        assert cache.load(path, "key-b", ["labels"]) is None
    assert str(path) in caplog.text and "other settings" in caplog.text
    assert cache.load(tmp_path / "absent.npz", "key-a", ["labels"]) is None
    assert cache.fingerprint("a", 1) == cache.fingerprint("a", 1) != cache.fingerprint("a", 2)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing field"])
def test_any_unreadable_file_means_recompute_with_a_warning(tmp_path, caplog, damage):
    path = tmp_path / "cell.npz"
    cache.save(path, "key", ARRAYS)
    data = path.read_bytes()
    if damage == "truncated":  # np.load raises zipfile.BadZipFile here
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        cache.save(path, "key", {"labels": ARRAYS["labels"]})
    with caplog.at_level(logging.WARNING, logger="dali_pixmix.evaluation.cache"):
        assert cache.load(path, "key", ["labels", "scores"]) is None
    assert f"cannot read cache {path}" in caplog.text and "recomputing" in caplog.text
