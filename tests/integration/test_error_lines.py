"""Bad input and failing file systems give ONE `error: ...` line naming the file, never a
traceback or a crash: eval scripts on undecodable images, train_imagenet.py and the tools."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from broken_images import cut_after_header, random_bytes
from child_env import child_env
from entry_points import load_script
from PIL import Image

from dali_pixmix.data.checks import UnreadableImageError
from dali_pixmix.distributed import DistInfo
from dali_pixmix.evaluation.runner import Evaluator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def error_line(stderr: str) -> str:
    """The one `error:` line of a run's stderr (DALI's own C++ log lines may precede it)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tiny_imagenet, tmp_path_factory):
    """A 6-class resnet18 checkpoint with the tiny set's classes."""
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pt"
    classes = sorted(p.name for p in (tiny_imagenet / "val").iterdir())
    torch.manual_seed(0)
    torch.save({"model": torchvision.models.resnet18(num_classes=6).state_dict(),
                "classes": classes, "arch": "resnet18"}, path)
    return path


def test_eval_clean_names_an_undecodable_file_instead_of_crashing(tiny_imagenet, checkpoint,
                                                                  tmp_path):
    """Random bytes named .JPEG at the default --batch-size 64: DALI 2.4 would die with a
    segmentation fault (exit 139) and no output."""
    val = shutil.copytree(tiny_imagenet / "val", tmp_path / "val")
    junk = random_bytes(sorted(val.iterdir())[0] / "n01440764_junk.JPEG")
    env = child_env(OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(REPO / "eval" / "clean.py"), "--checkpoint",
                           str(checkpoint), "--val", str(val), "--out", str(tmp_path / "out"),
                           "--resize", "36", "--crop", "32", "--num-threads", "1",
                           "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert f"cannot decode image {junk} (not an image" in line
    assert f"python tools/make_file_list.py {val} --verify" in line


def test_dali_decode_failures_are_named(tiny_imagenet, tmp_path):
    """Past the header check (here switched off) DALI's own failure is turned into the same
    error: named from DALI's message, or found among the failing batch's files."""
    val = shutil.copytree(tiny_imagenet / "val", tmp_path / "val")
    files = sorted(str(p) for p in val.rglob("*.JPEG"))
    cut = str(cut_after_header(Path(files[9]).with_name("cut.JPEG")))
    junk = str(random_bytes(Path(files[17]).with_name("junk.JPEG")))
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 6))
    ev = Evaluator(model, list("abcdef"), batch_size=4, resize=36, crop=32, num_threads=1,
                   dist=DistInfo(), progress=False, check_headers=False)
    for bad in (cut, junk):  # a data error DALI names; a header error it does not name
        listed = files[:10] + [bad] + files[10:]
        with pytest.raises(UnreadableImageError) as caught:
            ev.infer(listed, np.zeros(len(listed), np.int64), what="test image")
        assert caught.value.files == [Path(bad)], str(caught.value)
        assert str(caught.value).startswith(f"cannot decode test image {bad} (")


def run_train_main(capsys, *args):
    code = load_script("train_imagenet.py").main(list(args))
    return code, capsys.readouterr()


def tiny_args(tiny_imagenet, out, *extra):
    args = ["--config", str(REPO / "configs" / "demo.yaml")]
    for item in ("demo.enabled=false", f"data.train={tiny_imagenet / 'train'}",
                 f"data.val={tiny_imagenet / 'val'}", "augment.method=baseline",
                 "model.arch=resnet18", "data.crop=32", "data.val_resize=36", "data.val_crop=32",
                 "train.batch_size=16", "eval.batch_size=24", "data.num_threads=1",
                 "train.tensorboard=false", "train.max_steps=1", f"train.output_dir={out}",
                 *extra):
        args += ["--set", item]
    return args


def test_train_errors_are_one_line(tiny_imagenet, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out = run_train_main(capsys, *tiny_args(tiny_imagenet, blocker / "run"))
    assert code == 2 and "is not writable" in error_line(out.err)
    if not torch.cuda.is_available():
        code, out = run_train_main(capsys, *tiny_args(tiny_imagenet, tmp_path / "c",
                                                      "dist.device=cuda"))
        line = error_line(out.err)
        assert code == 2 and "torch sees no GPU" in line and "--set dist.device=cpu" in line
    train_dir = shutil.copytree(tiny_imagenet / "train", tmp_path / "train")
    first = sorted(next(train_dir.iterdir()).iterdir())[0]
    first.rename(first.with_name("two\nlines.JPEG"))
    code, out = run_train_main(capsys, *tiny_args(tiny_imagenet, tmp_path / "n",
                                                  f"data.train={train_dir}"))
    assert code == 2
    assert "two\\nlines.JPEG' has a line break" in error_line(out.err)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_is_one_line_naming_the_file(tiny_imagenet, tmp_path, capsys):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "config.yaml").symlink_to("/dev/full")
    code, out = run_train_main(capsys, *tiny_args(tiny_imagenet, out_dir))
    line = error_line(out.err)
    assert code == 1 and f"{out_dir / 'config.yaml'} (No space left on device)" in line
    assert "free space" in line


def test_eval_argument_errors_are_one_line(tiny_imagenet, checkpoint, tmp_path, capsys):
    clean = load_script("eval/clean.py")
    from dali_pixmix.evaluation import cli

    base = ["--checkpoint", str(checkpoint), "--val", str(tiny_imagenet / "val"), "--out",
            str(tmp_path / "out"), "--num-threads", "1", "--device", "cpu"]
    assert cli.run_cli(clean.main, base + ["--arch", "resnet50"]) == 2
    line = error_line(capsys.readouterr().err)
    assert line == (f"error: {checkpoint} holds a resnet18, not a resnet50: pass --arch "
                    "resnet18 or leave --arch out to use the checkpoint's own")
    assert cli.run_cli(clean.main, base + ["--resize", "32", "--crop", "36"]) == 2
    assert "--crop 36 is larger than --resize 32" in error_line(capsys.readouterr().err)


def test_a_mixing_picture_dali_cannot_decode_is_named(tmp_path):
    """A header that parses but pixels that do not: DALI fails mid-bank, and the error names
    the file (found among the batches in flight), not a whole-set PIL search."""
    from dali_pixmix.mixing.bank import load_or_build_bank

    (tmp_path / "pictures").mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(
            tmp_path / "pictures" / f"ok_{i}.png")
    cut_after_header(tmp_path / "pictures" / "ok_3_cut.jpg")
    with pytest.raises(UnreadableImageError, match="cannot decode mixing picture .*ok_3_cut.jpg"):
        load_or_build_bank(tmp_path / "pictures", size=32)


def test_mixing_bank_errors_name_the_file(tmp_path, capsys):
    from dali_pixmix.mixing.bank import load_or_build_bank

    np.save(tmp_path / "bank.npy", np.zeros((4, 64, 64, 3), np.uint8))
    data = (tmp_path / "bank.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=rf"cannot read mixing bank {tmp_path / 'cut.npy'} "
                                         r"\(.*\); it may be truncated: delete it"):
        load_or_build_bank(tmp_path / "cut.npy", size=64)
    (tmp_path / "pictures").mkdir()
    random_bytes(tmp_path / "pictures" / "junk.png")
    with pytest.raises(UnreadableImageError, match="cannot decode mixing picture .*junk.png"):
        load_or_build_bank(tmp_path / "pictures", size=32)
    tool = load_script("tools/build_mixing_bank.py")
    assert tool.main([str(tmp_path / "pictures"), "--out", str(tmp_path / "b.npy"),
                      "--size", "0"]) == 2
    assert "--size, --batch-size and --num-threads must be positive" in error_line(
        capsys.readouterr().err)


def test_build_mixing_bank_unwritable_out_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "pictures").mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 48, 3), 80 * i, np.uint8)).save(
            tmp_path / "pictures" / f"{i}.png")
    (tmp_path / "taken").write_text("a file where --out needs a folder\n")
    tool = load_script("tools/build_mixing_bank.py")
    assert tool.main([str(tmp_path / "pictures"), "--out", str(tmp_path / "taken" / "b.npy"),
                      "--size", "32", "--device", "cpu", "--num-threads", "1"]) == 1
    line = error_line(capsys.readouterr().err)
    assert line.startswith("error: file system error") and str(tmp_path / "taken") in line


def test_ctrl_c_in_an_eval_script_or_tool_is_one_line_saying_what_is_kept(capsys):
    """Ctrl-C (a real SIGINT, Python's own handler) during an eval script or a tool: one line
    saying what was kept, exit status 130, no KeyboardInterrupt traceback."""
    import os
    import signal
    import time

    from dali_pixmix.evaluation import cli

    def interrupted(_argv):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the signal arrives first
        return 0

    try:
        code = cli.run_cli(interrupted, [])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped run_cli")
    assert code == 130
    assert error_line(capsys.readouterr().err) == (
        "error: interrupted (Ctrl-C): the cells already evaluated stay cached in the --out "
        "folder; the same command goes on from them")


def test_a_pipeline_over_pictures_in_memory_reports_its_failure_and_keeps_ctrl_c():
    """CIFAR's training pipeline reads no file: a DALI failure has no suspect to name and is
    the pipeline's own error, while a Ctrl-C inside one of its python callbacks stays a
    Ctrl-C (the second-Ctrl-C exit, 130), as for pipelines over files."""
    from dali_pixmix.data.checks import PipelineError, decode_failure

    stopped = decode_failure(RuntimeError("Error in thread 0: KeyboardInterrupt"), [],
                             "training image")
    assert isinstance(stopped, KeyboardInterrupt)
    failed = decode_failure(RuntimeError("Assert on \"x\" failed: bad shape"), [],
                            "training image")
    assert isinstance(failed, PipelineError)
    assert str(failed).startswith("the training image pipeline failed: ")
