"""CIFAR readers: files built byte by byte like the official ones, restricted unpickling, errors."""
import os
import pickle
import struct

import numpy as np
import pytest

from dali_pixmix.data.cifar import (
    CifarDataError,
    cifar_class_names,
    find_cifar,
    read_cifar,
    write_cifar,
)
from dali_pixmix.data.restricted_pickle import (
    NUMPY_ARRAY_GLOBALS,
    UnreadablePickleError,
    UnsafePickleError,
    load_restricted,
)

pytestmark = pytest.mark.unit
NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def pictures(n, seed):
    """n pictures [n, 32, 32, 3] and, independently, their file rows: the R, G, B planes."""
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    images = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        for c in range(3):
            images[i, :, :, c] = planes[i, c]
    return images, [bytes(planes[i].reshape(-1)) for i in range(n)]


# ---------------------------------------------------------------- Python 2 pickles, by hand
def py2_str(b: bytes) -> bytes:
    """A Python 2 `str` as cPickle protocol 2 writes it: SHORT_BINSTRING or BINSTRING."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def py2_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def py2_list(items) -> bytes:
    return b"](" + b"".join(items) + b"e"          # EMPTY_LIST MARK ... APPENDS


def py2_uint8_matrix(rows) -> bytes:
    """numpy 1.x on Python 2: _reconstruct(ndarray, (0,), 'b') + BUILD with (version, shape,
    dtype('u1') + its state, fortran flag, raw bytes)."""
    dtype = (b"cnumpy\ndtype\n" + py2_str(b"u1") + py2_int(0) + py2_int(1) + b"\x87R"
             + b"(" + py2_int(3) + py2_str(b"|") + b"NNN" + py2_int(-1) + py2_int(-1)
             + py2_int(0) + b"tb")
    shape = py2_int(len(rows)) + py2_int(3072) + b"\x86"
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + py2_int(0)
            + b"\x85" + py2_str(b"b") + b"\x87R"
            + b"(" + py2_int(1) + shape + dtype + b"\x89" + py2_str(b"".join(rows)) + b"tb")


def py2_dict(pairs) -> bytes:
    return b"\x80\x02}(" + b"".join(py2_str(k) + v for k, v in pairs) + b"u."


def py2_batch(rows, labels, label_key=b"labels") -> bytes:
    return py2_dict([(b"batch_label", py2_str(b"training batch 1 of 5")),
                     (label_key, py2_list(py2_int(v) for v in labels)),
                     (b"data", py2_uint8_matrix(rows)),
                     (b"filenames", py2_list(py2_str(b"x_%d.png" % i) for i in range(len(rows))))])


def hand_made_cifar10_python(folder, counts=(2, 1, 3, 1, 2, 3)):
    """cifar-10-batches-py with batches of `counts` pictures (5 train, 1 test), as Python 2 wrote
    them; returns {split: (images, labels)}."""
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    out = {"train": ([], []), "test": ([], [])}
    for k, (name, n) in enumerate(zip(names, counts)):
        images, rows = pictures(n, seed=k)
        labels = [(3 * k + i) % 10 for i in range(n)]
        (folder / name).write_bytes(py2_batch(rows, labels))
        split = "test" if name == "test_batch" else "train"
        out[split][0].append(images)
        out[split][1].extend(labels)
    meta = py2_dict([(b"num_cases_per_batch", py2_int(10000)), (b"num_vis", py2_int(3072)),
                     (b"label_names", py2_list(py2_str(n.encode()) for n in NAMES10))])
    (folder / "batches.meta").write_bytes(meta)
    return {s: (np.concatenate(v[0]), np.array(v[1])) for s, v in out.items()}


def test_reads_python_2_pickles_as_the_official_files_hold_them(tmp_path):
    expected = hand_made_cifar10_python(tmp_path / "cifar-10-batches-py")
    # the hand-made bytes are a real pickle: plain pickle (trusted, our own bytes) agrees
    trusted = pickle.loads((tmp_path / "cifar-10-batches-py/data_batch_1").read_bytes(),
                           encoding="latin1")
    assert trusted["data"].shape == (2, 3072) and trusted["labels"] == [0, 1]
    for split in ("train", "test"):
        got = read_cifar(tmp_path, "cifar10", split)
        assert got.images.dtype == np.uint8 and got.images.flags.c_contiguous
        assert np.array_equal(got.images, expected[split][0])
        assert got.labels.dtype == np.int64 and np.array_equal(got.labels, expected[split][1])
        assert got.classes == NAMES10 and got.layout.format == "python"
    assert cifar_class_names(tmp_path / "cifar-10-batches-py", "cifar10") == NAMES10


def test_reads_binary_records_built_by_hand(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    expected = {}
    for k, name in enumerate(("train.bin", "test.bin")):
        images, rows = pictures(3 + k, seed=10 + k)
        fine = [97 - 40 * k + i for i in range(3 + k)]
        with open(folder / name, "wb") as f:
            for row, label in zip(rows, fine):
                f.write(bytes([label // 5, label]) + row)   # coarse byte, fine byte, pixels
        expected[name.split(".")[0]] = (images, np.array(fine))
    (folder / "fine_label_names.txt").write_text("\n".join(f"n{i}" for i in range(100)) + "\n\n")
    for split, (images, labels) in expected.items():
        got = read_cifar(tmp_path, "cifar100", split)
        assert np.array_equal(got.images, images) and np.array_equal(got.labels, labels)
        assert len(got.classes) == 100 and got.classes[-1] == "n99"


def test_writers_round_trip_and_match_the_hand_made_layout(tmp_path):
    expected = hand_made_cifar10_python(tmp_path / "hand" / "cifar-10-batches-py")
    for fmt in ("python", "binary"):
        folder = write_cifar(tmp_path / "ours", "cifar10", fmt, expected, NAMES10)
        for split in ("train", "test"):
            got = read_cifar(folder, "cifar10", split)
            assert np.array_equal(got.images, expected[split][0]), (fmt, split)
            assert np.array_equal(got.labels, expected[split][1]), (fmt, split)
    batch = pickle.loads((tmp_path / "ours/cifar-10-batches-py/data_batch_1").read_bytes(),
                         encoding="latin1")  # trusted: our own file
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (2, 3072)
    assert set(batch) == {"batch_label", "labels", "data", "filenames"}
    assert find_cifar(tmp_path / "ours", "cifar10")[0].format == "python"  # python first
    assert find_cifar(tmp_path / "ours", "cifar10", "binary")[0].format == "binary"


# ---------------------------------------------------------------- code in a pickle never runs
def write_marker(path):
    with open(path, "w") as f:
        f.write("the pickle ran code")


class RunsAFunction:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return write_marker, (str(self.marker),)


class RunsAShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", [RunsAFunction, RunsAShell])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, payload):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(payload(probe), protocol=2))  # plain pickle would run it
    assert probe.exists()
    folder = tmp_path / "cifar-10-batches-py"
    hand_made_cifar10_python(folder)
    marker = tmp_path / "marker"
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({"data": payload(marker), "labels": []}, protocol=2))
    with pytest.raises(UnsafePickleError, match="data_batch_2: refused") as err:
        read_cifar(tmp_path, "cifar10", "train")
    assert "system" in str(err.value) or "write_marker" in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("obj,match", [
    (np.array([1, "a"], dtype=object), "Python objects"),
    (np.ma.masked_array([1, 2]), "numpy.ma"),
    ({"x": __import__("collections").OrderedDict()}, "OrderedDict"),
])
def test_other_objects_are_refused(tmp_path, obj, match):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(UnsafePickleError, match=match):
        load_restricted(path, NUMPY_ARRAY_GLOBALS)


def test_only_latin1_codecs_pass(tmp_path):
    import codecs
    path = tmp_path / "p"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13"
                     b"\x86R.")
    assert codecs.encode("abc", "rot13") == "nop"  # the call it would make
    with pytest.raises(UnsafePickleError, match="latin-1 only"):
        load_restricted(path, NUMPY_ARRAY_GLOBALS)


# ---------------------------------------------------------------- bad input: one clear line
def test_folder_in_neither_format_says_what_is_expected(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(CifarDataError, match="cifar-10-batches-py/.*or cifar-10-batches-bin/"):
        read_cifar(tmp_path, "cifar10", "train")
    write_cifar(tmp_path, "cifar100", "binary", {s: (np.zeros((1, 32, 32, 3), np.uint8), [0])
                                                 for s in ("train", "test")}, ["a", "b"])
    with pytest.raises(CifarDataError, match="it has cifar-100-binary: another dataset"):
        read_cifar(tmp_path, "cifar10", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cifar(tmp_path / "nowhere", "cifar10", "train")
    with pytest.raises(CifarDataError, match="unknown CIFAR dataset 'cifar-10'"):
        read_cifar(tmp_path, "cifar-10", "train")


def test_incomplete_folder_lists_the_missing_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    hand_made_cifar10_python(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(CifarDataError, match="missing data_batch_3 "):
        read_cifar(tmp_path, "cifar10", "test")


def test_truncated_files(tmp_path):
    data = {s: pictures(4, 0)[0] for s in ("train", "test")}
    splits = {s: (data[s], [1, 2, 3, 0]) for s in data}
    for fmt, name, match in (("binary", "test_batch.bin", "not a whole number of 3073-byte"),
                             ("python", "test_batch", "cannot unpickle it .*truncated")):
        folder = write_cifar(tmp_path, "cifar10", fmt, splits, NAMES10)
        raw = (folder / name).read_bytes()
        (folder / name).write_bytes(raw[:len(raw) - 100])
        with pytest.raises((CifarDataError, UnreadablePickleError), match=match) as err:
            read_cifar(folder, "cifar10", "test")
        assert str(err.value).startswith(str(folder / name))


@pytest.mark.parametrize("batch,match", [
    ({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, r"uint8 \[N, 3072\].*\[2, 3000\]"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "float32"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "one integer label per image"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "label 10 is outside the 10"),
    ({"images": np.zeros((2, 3072), np.uint8)}, "'data' must be"),
    ([1, 2], "pickled list, not the dict"),
])
def test_wrong_contents(tmp_path, batch, match):
    folder = tmp_path / "cifar-10-batches-py"
    hand_made_cifar10_python(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(CifarDataError, match=match):
        read_cifar(tmp_path, "cifar10", "test")
