"""Validation during training and eval/clean.py see the same images and report the same numbers.

The validation folder carries two real-world hazards: macOS AppleDouble files (`._x.JPEG`,
JPEG-named junk that no decoder reads) and a class whose images all sit in nested sub-folders.
The one discovery rule skips the first and finds the second, in training and in evaluation.
"""
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from dali_pixmix.config import load_config
from dali_pixmix.evaluation import cli
from dali_pixmix.evaluation.report import read_rows
from dali_pixmix.training.loop import train

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64


def hazardous_val(src: Path, dst: Path) -> Path:
    """A copy of `src` with AppleDouble junk beside every class's images and one class's
    images moved two folders down."""
    shutil.copytree(src, dst)
    classes = sorted(p.name for p in dst.iterdir())
    for wnid in classes:
        for image in sorted((dst / wnid).glob("*.JPEG")):
            (image.parent / f"._{image.name}").write_bytes(APPLE_DOUBLE)
    nested = dst / classes[2] / "batch_1" / "more"
    nested.mkdir(parents=True)
    for image in sorted((dst / classes[2]).glob("*.JPEG")):
        image.rename(nested / image.name)
    (nested / "._batch.JPEG").write_bytes(APPLE_DOUBLE)
    return dst


def test_training_validation_equals_eval_clean(tiny_imagenet, tmp_path):
    val = hazardous_val(tiny_imagenet / "val", tmp_path / "val")
    out = tmp_path / "run"
    cfg = load_config(None, [
        f"data.train={tiny_imagenet / 'train'}", f"data.val={val}", "augment.method=baseline",
        f"train.output_dir={out}", "data.crop=32", "data.val_resize=36", "data.val_crop=32",
        "data.num_threads=1", "model.arch=resnet18", "train.batch_size=16",
        "eval.batch_size=8", "train.epochs=1", "train.tensorboard=false", "optim.lr=0.05",
        "eval.calibration_bin_size=5", "train.deterministic=true"])
    val_metrics = train(cfg, resume="none")["val"]
    assert val_metrics["n"] == 24  # 6 classes x 4 images: nested ones in, junk out

    spec = importlib.util.spec_from_file_location("eval_clean_v", REPO / "eval" / "clean.py")
    clean = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clean)
    argv = ["--checkpoint", str(out / "final.pt"), "--val", str(val), "--out", str(tmp_path / "e"),
            "--resize", "36", "--crop", "32", "--batch-size", "8", "--num-threads", "1",
            "--calibration-bin-size", "5", "--device", "cpu"]
    assert cli.run_cli(clean.main, argv) == 0
    rows = {r.metric: r for r in read_rows(tmp_path / "e" / "results" / "clean.json")}
    assert rows["top1_error"].n == 24
    labels = np.load(tmp_path / "e" / "cache" / "clean" / "val.npz")["labels"]
    np.testing.assert_array_equal(np.bincount(labels), [4] * 6)  # the nested class is there
    assert val_metrics["top1"] == pytest.approx(100 - rows["top1_error"].value, abs=1e-9)
    assert val_metrics["top5"] == pytest.approx(100 - rows["top5_error"].value, abs=1e-9)
    assert val_metrics["rms"] == pytest.approx(rows["rms"].value, abs=1e-9)
    assert val_metrics["ece15"] == pytest.approx(rows["ece"].value, abs=1e-9)


def test_eval_batch_size_is_global(tiny_imagenet):
    """--batch-size / eval.batch_size is summed over ranks, as the training config's."""
    import torch

    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.runner import Evaluator

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 6))
    ev = Evaluator(model, list("abcdef"), batch_size=12, dist=DistInfo(rank=1, world_size=4))
    assert ev.rank_batch_size == 3
    files = sorted((tiny_imagenet / "val").rglob("*.JPEG"))[:10]
    preds = Evaluator(model, list("abcdef"), batch_size=4, resize=36, crop=32,
                      dist=DistInfo()).infer(files, [0] * 10)
    assert len(preds) == 10 and model.training  # the caller's train mode is restored
    with pytest.raises(ValueError, match="--batch-size=10 is the GLOBAL batch.*world size 4"):
        Evaluator(model, list("abcdef"), batch_size=10, dist=DistInfo(world_size=4))


def test_validation_reuses_one_loader_per_file_list(tiny_imagenet):
    """keep_loaders (training's validation): the second pass over the same images reads them
    all again, in order, from the same pipeline; another list gets its own; without it every
    call builds a new one."""
    import torch

    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.runner import FIELDS, Evaluator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 6))
    files = sorted((tiny_imagenet / "val").rglob("*.JPEG"))
    labels = list(range(6)) * 4
    settings = dict(batch_size=5, resize=36, crop=32, dist=DistInfo(), progress=False)
    ev = Evaluator(model, list("abcdef"), keep_loaders=True, **settings)
    first = ev.infer(files, labels)
    (kept,) = ev._loaders.values()
    second = ev.infer(files, labels)
    assert list(ev._loaders.values()) == [kept]
    fresh = Evaluator(model, list("abcdef"), **settings).infer(files, labels)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
        np.testing.assert_array_equal(getattr(first, field), getattr(fresh, field))
    ev.infer(files[:7], labels[:7])
    assert len(ev._loaders) == 2
    ev.release_loaders()
    assert ev._loaders == {}


def test_evaluation_batches_outlive_their_forward_pass(tiny_imagenet):
    """DALI's zero-copy batches go back to DALI's pool when torch drops them, with no ordering
    against the device: the runner keeps the last two batches (each until its forward pass has
    completed on a GPU; on the CPU that is when the call returns) and lets older ones go."""
    import weakref

    import torch

    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.runner import Evaluator

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(3, 6))
    ev = Evaluator(model, list("abcdef"), batch_size=4, resize=36, crop=32, dist=DistInfo(),
                   progress=False)
    batches, seen, forward = [], [], ev._forward

    def watched(images, labels, mask):
        seen.append([ref() is not None for ref in batches])
        batches.append(weakref.ref(images))
        return forward(images, labels, mask)

    ev._forward = watched
    files = sorted((tiny_imagenet / "val").rglob("*.JPEG"))[:16]
    assert len(ev.infer(files, [0] * 16)) == 16
    assert seen == [[], [True], [True, True], [False, True, True]]
