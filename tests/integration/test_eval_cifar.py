"""eval/cifar.py end to end on the generated CIFAR suite with a tiny Wide ResNet checkpoint, its
bad-input errors, and --pgd on eval/clean.py (ImageNet)."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from entry_points import load_script

from dali_pixmix.checkpoint import atomic_save
from dali_pixmix.config import Config
from dali_pixmix.evaluation import cli
from dali_pixmix.evaluation.synthetic_cifar import (
    make_synthetic_cifar_suite,
    synthetic_class_names,
    synthetic_split,
)
from dali_pixmix.models import build_model

pytestmark = pytest.mark.integration

TASKS = ("cifar_clean", "cifar_c", "cifar_cbar", "cifar_p", "pgd", "cifar_ood")


def cifar_checkpoint(path, dataset="cifar10", classes=10, config=True, seed=0):
    """A training checkpoint (the checkpoint module's writer) of a WRN-10-1 whose saved config
    says `dataset`, its weights drawn from `seed`."""
    cfg = Config()
    cfg.data.dataset, cfg.model.arch = dataset, "wrn10_1"
    torch.manual_seed(seed)
    state = {"model": build_model("wrn10_1", classes).state_dict(), "arch": "wrn10_1",
             "classes": synthetic_class_names(classes), "epoch": 0, "step": 0}
    if config:
        state["config"] = asdict(cfg)
    return atomic_save(state, path)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_suite")
    paths = make_synthetic_cifar_suite(root / "data", "cifar10", train_per_class=1,
                                       test_per_class=1, frames=3, progress=False)
    return paths, cifar_checkpoint(root / "final.pt")


def run(argv):
    return cli.run_cli(load_script("eval/cifar.py").main, [str(a) for a in argv])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_whole_suite_from_the_generated_data(suite, tmp_path, capsys):
    paths, ckpt = suite
    argv = ["--checkpoint", ckpt, "--data-root", paths["root"], "--out", tmp_path,
            "--batch-size", 8, "--device", "cpu", "--calibration-bin-size", 5, "--pgd",
            "--pgd-steps", 2, "--name", "tiny"]
    assert run(argv) == 0
    printed = capsys.readouterr().out
    assert "evaluating with resize" not in printed  # 32 px fed as they are: no size to name
    for task in TASKS:  # C, C-bar and P found under --data-root by their reference names
        assert (tmp_path / "results" / f"{task}.json").is_file(), task
        assert (tmp_path / "results" / f"{task}.csv").is_file(), task
    table = (tmp_path / "table8.md").read_text()
    ours = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    assert "-" not in ours.replace("| tiny |", "")  # every column measured
    assert ours in printed and "| PixMix (paper) | 4.2 | 9.5 |" in table
    assert "C mCE, RMS C over 5 of 15 corruptions" in table  # the stand-ins: partial sets

    # the clean error, independently: the weights on the generated test pictures
    model = build_model("wrn10_1", 10)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    images, labels = synthetic_split(10, 1, 0, "test")
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        wrong = (model.eval()(x).argmax(1).numpy() != labels).mean()
    rows = json.loads((tmp_path / "results" / "cifar_clean.json").read_text())
    top1 = next(r for r in rows if r["metric"] == "top1_error")
    assert top1["value"] == pytest.approx(100 * wrong) and top1["n"] == 10
    assert top1["protocol"] == "cifar:32px-as-is,mean=0.5,0.5,0.5,std=0.5,0.5,0.5"
    pgd = json.loads((tmp_path / "results" / "pgd.json").read_text())
    assert pgd[0]["value"] >= top1["value"] and "steps=2" in pgd[0]["protocol"]

    # a rerun reads every cell from the cache
    caches = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.npz")}
    assert len(caches) >= 1 + 5 + 2 + 3 + 1 + 3
    assert run(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in caches} == caches
    assert (tmp_path / "table8.md").read_text() == table
    assert {r["weights"] for r in rows} == {pgd[0]["weights"]} != {""}  # rows name the model

    # another checkpoint's results never join these: refused before any inference
    other = cifar_checkpoint(tmp_path.parent / f"{tmp_path.name}_other.pt", seed=1)
    assert run(["--checkpoint", other, *argv[2:]]) == 2
    assert f"--out {tmp_path} holds the results of" in error_line(capsys)


def test_bad_inputs_are_one_error_line(suite, tmp_path, capsys):
    paths, ckpt = suite
    base = ["--data-root", paths["root"], "--out", tmp_path / "out", "--device", "cpu"]
    bad = tmp_path / "bad_c"
    bad.mkdir()
    np.save(bad / "fog.npy", np.zeros((51, 32, 32, 3), np.uint8))
    np.save(bad / "labels.npy", np.zeros(50, np.int64))
    assert run(["--checkpoint", ckpt, *base, "--cifar-c", bad]) == 2
    line = error_line(capsys)
    assert f"{bad / 'fog.npy'} holds 51 images but {bad / 'labels.npy'} has 50 labels" in line
    assert "expected 5 severities x 10 images = 50 images" in line

    assert run(["--checkpoint", ckpt, *base, "--cifar-p", tmp_path / "absent"]) == 2
    assert f"CIFAR-P folder {tmp_path / 'absent'} does not exist" in error_line(capsys)

    five = cifar_checkpoint(tmp_path / "five.pt", classes=5)
    assert run(["--checkpoint", five, *base]) == 2
    assert "names 10 classes but the checkpoint's model has 5" in error_line(capsys)

    imagenet = cifar_checkpoint(tmp_path / "imagenet.pt", dataset="imagenet")
    assert run(["--checkpoint", imagenet, *base]) == 2
    assert "was trained on imagenet (its data.dataset), not CIFAR" in error_line(capsys)

    bare = cifar_checkpoint(tmp_path / "bare.pt", config=False)
    assert run(["--checkpoint", bare, *base]) == 2
    assert "records no training config (data.dataset): pass --dataset" in error_line(capsys)
    assert run(["--checkpoint", ckpt, *base, "--dataset", "cifar100"]) == 2
    assert "--dataset cifar100 disagrees" in error_line(capsys)
    assert run(["--checkpoint", ckpt, *base, "--pgd", "--pgd-epsilon", "2/0"]) == 2
    assert "--pgd-epsilon expects a number or a fraction" in error_line(capsys)
    assert not (tmp_path / "out" / "results").exists()  # nothing evaluated


def test_pgd_on_imagenet_through_eval_clean(tiny_imagenet, tmp_path, capsys):
    classes = sorted(p.name for p in (tiny_imagenet / "val").iterdir())
    torch.manual_seed(0)
    ckpt = atomic_save({"model": build_model("resnet18", 6).state_dict(), "arch": "resnet18",
                        "classes": classes}, tmp_path / "r18.pt")
    argv = ["--checkpoint", ckpt, "--val", tiny_imagenet / "val", "--out", tmp_path / "out",
            "--resize", 36, "--crop", 32, "--batch-size", 8, "--num-threads", 1,
            "--device", "cpu", "--calibration-bin-size", 4, "--pgd", "--pgd-steps", 2,
            "--pgd-count", 10]
    assert cli.run_cli(load_script("eval/clean.py").main, [str(a) for a in argv]) == 0
    assert "pgd: imagenet_val/- error=" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "out" / "results" / "pgd.json").read_text())
    assert row["dataset"] == "imagenet_val" and row["n"] == 10
    assert "subset=10-of-24-evenly-spaced" in row["protocol"]
    assert row["protocol"].endswith(";resize36-crop32")
