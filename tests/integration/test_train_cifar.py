"""CIFAR training through the one trainer (train_cifar.py, training.loop.train) on generated
CIFAR folders: exact mid-epoch resume, both official formats training to the same weights, the
demo's generated data and results table, and one-line errors. Tiny runs (WRN-10-1, a few steps)
check behaviour, not accuracy."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from entry_points import load_script

from dali_pixmix.checkpoint import list_checkpoints
from dali_pixmix.config import load_config
from dali_pixmix.data.cifar import layout
from dali_pixmix.evaluation.synthetic_cifar import make_synthetic_cifar
from dali_pixmix.training.loop import train

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLASSES = 4


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A generated CIFAR-10 layout (4 classes, 12 train + 5 test pictures each) in both formats."""
    root = tmp_path_factory.mktemp("cifar")
    return make_synthetic_cifar(root, "cifar10", num_classes=CLASSES, train_per_class=12,
                                test_per_class=5, progress=False)


def tiny(root, mixing, out, *extra):
    return [f"data.root={root}", f"pixmix.mixing_set={mixing}", f"train.output_dir={out}",
            "data.num_threads=1", "model.arch=wrn10_1", "train.batch_size=16",
            "eval.batch_size=20", "eval.calibration_bin_size=5", "train.log_every=1",
            "train.tensorboard=false", "train.deterministic=true", "dist.device=cpu", *extra]


def final_weights(out_dir):
    return torch.load(Path(out_dir) / "final.pt", weights_only=True)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cifar_run_resumes_mid_epoch_exactly(cifar_root, tiny_mixing_dir, tmp_path):
    """2 epochs x 3 steps straight == stop at step 4 (mid epoch 2), resume, finish: PixMix in
    the pipeline (the paper's CIFAR settings, 36 px bank) and CutMix on the training device."""
    recipe = REPO / "configs" / "cifar10_pixmix_cutmix.yaml"
    straight = tmp_path / "straight"
    cfg = load_config(recipe, tiny(cifar_root, tiny_mixing_dir, straight, "train.epochs=2"))
    result = train(cfg, resume="none")
    assert result["status"] == "finished" and result["step"] == 6
    assert result["val"]["n"] == CLASSES * 5  # the test split, validated from memory

    split = tmp_path / "split"
    first = load_config(recipe, tiny(cifar_root, tiny_mixing_dir, split, "train.epochs=2",
                                     "train.max_steps=4"))
    assert train(first, resume="auto") == {"status": "stopped", "step": 4}
    assert list_checkpoints(split)[-1].name == "ckpt_e0001_s000000004.pt"
    second = load_config(recipe, tiny(cifar_root, tiny_mixing_dir, split, "train.epochs=2"))
    assert train(second, resume="auto")["step"] == 6

    assert same_weights(final_weights(straight), final_weights(split))
    lines = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    plain = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in lines] == [x["loss"] for x in plain]
    assert [x["val"]["top1"] for x in lines] == [x["val"]["top1"] for x in plain]
    final = torch.load(split / "final.pt", weights_only=True)
    assert final["arch"] == "wrn10_1" and len(final["classes"]) == CLASSES
    assert final["config"]["data"]["dataset"] == "cifar10"


def run_cifar_main(capsys, *args):
    code = load_script("train_cifar.py").main(list(args))
    return code, capsys.readouterr()


def demo_args(out, *extra):
    args = ["--config", str(REPO / "configs" / "cifar_demo.yaml")]
    for item in ("demo.num_classes=3", "demo.train_per_class=6", "demo.val_per_class=3",
                 "demo.fractals=4", "data.num_threads=1", "model.arch=wrn10_1",
                 "train.epochs=1", "train.batch_size=6", "eval.batch_size=9",
                 "eval.calibration_bin_size=3", "train.tensorboard=false",
                 "train.deterministic=true", f"train.output_dir={out}", *extra):
        args += ["--set", item]
    return args


def test_demo_generates_its_data_and_either_format_trains_to_the_same_weights(tmp_path,
                                                                            capsys):
    """The demo generates CIFAR-10 (both formats, C / C-bar / P stand-ins) and fractals once,
    trains, evaluates the CIFAR suite (PGD included) and prints its tables; data.root naming
    the binary version of the same data trains to bit-identical weights (both formats read to
    the same arrays)."""
    demo = tmp_path / "demo"
    code, out = run_cifar_main(capsys, *demo_args(tmp_path / "a", f"demo.root={demo}"))
    assert code == 0, out.err
    assert "| top-1 accuracy (%) |" in out.out
    assert "| anomaly detection AUROC, msp (%) |" in out.out
    # the CIFAR suite on the final weights: Table 8's layout, C / C-bar / P stand-ins and PGD
    assert "Table 8 layout" in out.out and "| wrn10_1, pixmix |" in out.out
    for task in ("cifar_clean", "cifar_c", "cifar_cbar", "cifar_p", "pgd", "cifar_ood"):
        assert (tmp_path / "a" / "eval" / "results" / f"{task}.json").is_file(), task
    for folder in ("cifar-10-batches-py", "cifar-10-batches-bin", "CIFAR-10-C",
                   "CIFAR-10-C-Bar", "CIFAR-10-P"):
        assert (demo / folder).is_dir(), folder
    assert len(list((demo / "fractals").glob("*.png"))) == 4
    binary = demo / layout("cifar10", "binary").folder
    code, out = run_cifar_main(capsys, *demo_args(tmp_path / "b", f"demo.root={tmp_path / 'x'}",
                                                  f"data.root={binary}",
                                                  f"pixmix.mixing_set={demo / 'fractals'}"))
    assert code == 0, out.err
    assert not (tmp_path / "x").exists()  # nothing generated: data and mixing set were given
    assert same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))


def test_cifar_errors_are_one_line(cifar_root, tiny_mixing_dir, tmp_path, capsys):
    recipe = str(REPO / "configs" / "cifar10_baseline.yaml")

    def error(*args):
        code, out = run_cifar_main(capsys, *args)
        lines = out.err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.err
        return lines[0]

    line = error("--config", str(REPO / "configs" / "imagenet_pixmix.yaml"))
    assert "run it with train_imagenet.py" in line
    line = error("--config", recipe, "--set", "dist.device=cpu", "--set", "data.root=")
    assert "data.root is empty: set it to the cifar10 data folder" in line
    line = error("--config", recipe, "--set", "data.crop=28")
    assert "'data.crop' must be 32" in line
    line = error("--config", recipe, "--set", f"data.train={cifar_root}")
    assert "reads its train and test splits from data.root" in line
    other = tmp_path / "other"
    make_synthetic_cifar(other, "cifar100", ["binary"], num_classes=CLASSES, train_per_class=2,
                         test_per_class=1, progress=False)
    args = ["--config", recipe]
    for item in tiny(other, tiny_mixing_dir, tmp_path / "o"):
        args += ["--set", item]
    line = error(*args)
    assert f"{other} holds no cifar10 data" in line and "cifar-100-binary" in line
    broken = shutil.copytree(cifar_root / "cifar-10-batches-py", tmp_path / "broken")
    (broken / "data_batch_3").write_bytes((broken / "data_batch_3").read_bytes()[:500])
    args = ["--config", recipe]
    for item in tiny(broken, tiny_mixing_dir, tmp_path / "b"):
        args += ["--set", item]
    line = error(*args)
    assert "data_batch_3" in line


def test_resuming_with_other_classes_is_one_line(cifar_root, tiny_mixing_dir, tmp_path, capsys):
    """A CIFAR run's checkpoint does not resume on data with another class count."""
    out = tmp_path / "run"
    args = ["--config", str(REPO / "configs" / "cifar10_baseline.yaml")]
    for item in tiny(cifar_root, tiny_mixing_dir, out, "train.max_steps=1"):
        args += ["--set", item]
    code, _ = run_cifar_main(capsys, *args)
    assert code == 0 and list_checkpoints(out)
    five = tmp_path / "five"
    make_synthetic_cifar(five, "cifar10", ["python"], num_classes=5, train_per_class=4,
                         test_per_class=1, progress=False)
    args = ["--config", str(REPO / "configs" / "cifar10_baseline.yaml")]
    for item in tiny(five, tiny_mixing_dir, out, "train.max_steps=2"):
        args += ["--set", item]
    code, captured = run_cifar_main(capsys, *args)
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert f"was trained on {CLASSES} classes but the training data has 5" in lines[0]
