"""Image scanning and DALI file lists, checked against DALI's own reader and the real CLI."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from child_env import child_env
from nvidia.dali import fn, pipeline_def
from PIL import Image

from dali_pixmix.data.file_lists import make_file_list, read_file_list, write_file_list
from dali_pixmix.data.images import class_folders, scan_images

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _dali_read(n: int, **reader_args):
    """Read n files with DALI's CPU file reader; returns (bytes per file, labels)."""
    @pipeline_def(batch_size=n, num_threads=1, device_id=None)
    def pipe():
        data, labels = fn.readers.file(random_shuffle=False, **reader_args)
        return data, labels

    p = pipe()
    p.build()
    data, labels = p.run()
    return ([data.at(i).tobytes() for i in range(n)],
            [int(x) for x in np.asarray(labels.as_array()).ravel()])


def _dali_read_list(list_path: Path, n: int, file_root=None):
    kwargs = {"file_root": str(file_root)} if file_root is not None else {}
    return _dali_read(n, file_list=str(list_path), **kwargs)


def test_scan_images_nested_sorted_case_insensitive(tiny_mixing_dir, tmp_path):
    found = scan_images(tiny_mixing_dir)
    assert len(found) == 12 and sum(p.suffix == ".jpg" for p in found) == 1
    rel = [p.relative_to(tiny_mixing_dir).as_posix() for p in found]
    assert rel == sorted(rel)
    shutil.copy(found[0], tmp_path / "UPPER.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(found[0].read_bytes())
    assert [p.name for p in scan_images(tmp_path)] == ["UPPER.PNG"]


def test_scan_and_class_folders_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        scan_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        scan_images(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "x.png")
    with pytest.raises(ValueError, match=r"1 class folder\(s\) hold no images \(e.g. .*b\)"):
        class_folders(tmp_path)


def test_class_folders_lexicographic(tiny_imagenet):
    names = [p.name for p in class_folders(tiny_imagenet / "train")]
    assert names == sorted(os.listdir(tiny_imagenet / "train")) and len(names) == 6


def test_write_read_round_trip_matches_dali(tiny_mixing_dir, tmp_path):
    files = scan_images(tiny_mixing_dir)
    spaced = tmp_path / "with space" / "pic one.png"
    spaced.parent.mkdir()
    shutil.copy(files[0], spaced)
    entries = [(os.path.relpath(f, tmp_path), i % 3) for i, f in enumerate(files)]
    entries.append(("with space/pic one.png", 7))
    lst = write_file_list(tmp_path / "list.txt", entries)
    got_files, got_labels = read_file_list(lst, root=tmp_path)
    assert got_labels == [label for _, label in entries]
    assert [Path(os.path.relpath(f, tmp_path)).as_posix() for f in got_files] == \
        [Path(r).as_posix() for r, _ in entries]
    # DALI reads the same list (relative to file_root) into the same bytes and labels.
    data, labels = _dali_read_list(lst, len(entries), file_root=tmp_path)
    assert labels == got_labels
    assert data == [f.read_bytes() for f in got_files]


def test_read_file_list_errors_name_the_line(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    cases = {"ok.png 1\nok.png\n": r"list.txt:2: expected",
             "ok.png 1\n\nok.png x\n": r"list.txt:3: label 'x'",
             "ok.png -1\n": r"list.txt:1: label -1 is negative"}
    for text, message in cases.items():
        (tmp_path / "list.txt").write_text(text)
        with pytest.raises(ValueError, match=message):
            read_file_list(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("ok.png 0\ngone.png 0\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:2: .*gone.png does not exist"):
        read_file_list(tmp_path / "list.txt")
    with pytest.raises(ValueError, match="must be relative"):
        write_file_list(tmp_path / "w.txt", [("/abs/x.png", 0)])
    with pytest.raises(ValueError, match="label"):
        write_file_list(tmp_path / "w.txt", [("x.png", -2)])


def test_make_file_list_folder_labels_agree_with_dali_folder_mode(tiny_imagenet):
    out = tiny_imagenet / "lists" / "train.txt"
    summary = make_file_list(tiny_imagenet / "train", out, root=tiny_imagenet, progress=False)
    assert summary["num_files"] == 48 and summary["num_classes"] == 6
    files, labels = read_file_list(out, root=tiny_imagenet)
    data, list_labels = _dali_read_list(out, 48, file_root=tiny_imagenet)
    assert list_labels == labels and data == [f.read_bytes() for f in files]
    # Independent labelling: DALI's folder mode (class = sorted sub-folder index).
    folder_data, folder_labels = _dali_read(48, file_root=str(tiny_imagenet / "train"))
    assert sorted(zip(folder_labels, folder_data)) == sorted(zip(labels, data))


def _copy_with_broken(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    victim = sorted(dst.rglob("*.JPEG"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    (dst / sorted(os.listdir(dst))[0] / "fake.jpg").write_text("this is not a JPEG")
    return victim


def test_verify_reports_and_omits_broken_files(tiny_imagenet, tmp_path):
    victim = _copy_with_broken(tiny_imagenet / "val", tmp_path / "val")
    out = tmp_path / "val.txt"
    summary = make_file_list(tmp_path / "val", out, verify=True, progress=False)
    rel_victim = victim.relative_to(tmp_path).as_posix()
    assert summary["num_broken"] == 2
    fake = f"val/{summary['classes'][0]}/fake.jpg"
    assert sorted(summary["broken"]) == sorted([rel_victim, fake])
    files, _ = read_file_list(out)
    assert len(files) == 23 and victim not in files  # 24 + fake.jpg - 2 broken
    # Without --verify nothing is dropped: the list keeps all 25 entries.
    assert make_file_list(tmp_path / "val", out, verify=False, progress=False)["num_files"] == 25


def test_verify_without_a_list_only_names_the_broken_files(tiny_imagenet, tmp_path, capsys):
    """`make_file_list.py FOLDER --verify`: the fix that "cannot decode" errors point to."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_file_list_tool",
                                                  REPO / "tools" / "make_file_list.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    victim = _copy_with_broken(tiny_imagenet / "val", tmp_path / "val")
    assert tool.main([str(tmp_path / "val"), "--verify", "--no-progress"]) == 1
    out = capsys.readouterr().out
    fake = sorted((tmp_path / "val").iterdir())[0] / "fake.jpg"
    assert f"broken: {victim}\n" in out and f"broken: {fake}\n" in out
    assert "2 of 25 images" in out  # 24 pictures + fake.jpg
    assert tool.main([str(tiny_imagenet / "val"), "--verify", "--no-progress"]) == 0
    assert "all 24 images" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # neither a list to write nor --verify
        tool.main([str(tiny_imagenet / "val")])


def _run_cli(*args, tool="make_file_list.py"):
    env = child_env()
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_make_file_list_cli_end_to_end(tiny_imagenet, tmp_path):
    victim = _copy_with_broken(tiny_imagenet / "val", tmp_path / "ood")
    out = tmp_path / "lists" / "ood.txt"
    done = _run_cli(str(tmp_path / "ood"), str(out), "--root", str(tmp_path), "--labels", "zero",
                    "--verify", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert victim.name in done.stderr and "fake.jpg" in done.stderr
    assert "23 images" in done.stdout and "2 broken omitted" in done.stdout
    files, labels = read_file_list(out, root=tmp_path)
    assert len(files) == 23 and set(labels) == {0}
    failed = _run_cli(str(tmp_path / "nowhere"), str(out))
    assert failed.returncode == 2 and "error:" in failed.stderr and "nowhere" in failed.stderr
    assert failed.stderr.startswith("error: ") and len(failed.stderr.splitlines()) == 1
    assert "--labels" in _run_cli("--help").stdout


def test_generator_clis_chain_into_a_file_list(tmp_path):
    made = _run_cli(str(tmp_path / "data"), "--num-classes", "2", "--train-per-class", "2",
                    "--val-per-class", "1", "--min-size", "24", "--max-size", "32",
                    "--no-progress", tool="make_synthetic_imagenet.py")
    assert made.returncode == 0, made.stderr
    assert "2 classes, 6 images" in made.stdout
    sheet = tmp_path / "sheet.png"
    frac = _run_cli(str(tmp_path / "data" / "mix"), "-n", "3", "--size", "32", "--no-progress",
                    "--contact-sheet", str(sheet), tool="make_fractals.py")
    assert frac.returncode == 0, frac.stderr
    assert Image.open(sheet).size == (3 * 128, 128)
    listed = _run_cli(str(tmp_path / "data" / "mix"), str(tmp_path / "data" / "mix.txt"),
                      "--labels", "zero", "--no-progress")
    assert listed.returncode == 0, listed.stderr
    files, labels = read_file_list(tmp_path / "data" / "mix.txt")
    assert [f.name for f in files] == [f"fractal_{i:05d}.png" for i in range(3)]
    assert labels == [0, 0, 0]
    clash = _run_cli(str(tmp_path / "data"), "--num-classes", "3", "--no-progress",
                     tool="make_synthetic_imagenet.py")
    assert clash.returncode == 2 and "other parameters" in clash.stderr
    assert clash.stderr.startswith("error: ") and len(clash.stderr.splitlines()) == 1


def test_scan_survives_symlink_cycle_and_recurses_into_class_folders(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    for rel in ("a/x.png", "a/sub/y.png", "b/z.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
    (tmp_path / "a" / "sub" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    assert [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)] == \
        ["a/sub/y.png", "a/x.png", "b/z.png"]
    summary = make_file_list(tmp_path, tmp_path / "list.txt", progress=False)
    assert (tmp_path / "list.txt").read_text() == "a/sub/y.png 0\na/x.png 0\nb/z.png 1\n"
    assert summary["classes"] == ["a", "b"]


def test_a_folder_outside_the_lists_folder_names_the_flag(tiny_imagenet, tmp_path, capsys):
    """The tool's flag is --root (the library's argument root= is no flag of the tool)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_file_list_tool",
                                                  REPO / "tools" / "make_file_list.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "lists" / "val.txt"
    assert tool.main([str(tiny_imagenet / "val"), str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tiny_imagenet / 'val'} is not inside {out.parent} (the list's folder, the "
        "default root); pass --root a folder that contains it"]
    assert not out.exists()
