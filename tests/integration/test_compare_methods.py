"""tools/compare_methods.py at toy size: every method trained on the same demo data, evaluated
by the evaluation suite, one table / CSV / chart; and the generated corruptions."""
import csv
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from child_env import child_env
from PIL import Image

from dali_pixmix.evaluation import datasets
from dali_pixmix.evaluation.synthetic_corruptions import CORRUPTIONS, corrupt

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOY = ["demo.num_classes=3", "demo.train_per_class=6", "demo.val_per_class=2", "demo.fractals=4",
       "demo.min_size=36", "demo.max_size=48", "pixmix.bank_size=40", "data.num_threads=1",
       "train.epochs=1", "train.batch_size=9", "eval.batch_size=6", "eval.every_epochs=1",
       "eval.calibration_bin_size=2"]


def tool():
    spec = importlib.util.spec_from_file_location("compare_methods",
                                                  REPO / "tools" / "compare_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_writes_one_table_of_every_method(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default recipe is the checkout's, from any folder
    out = tmp_path / "cmp"
    sets = [a for item in TOY + [f"demo.root={tmp_path / 'demo'}"] for a in ("--set", item)]
    argv = ["--methods", "baseline", "cutmix", "--out", str(out), *sets]
    assert tool().main(argv) == 0
    table = (out / "comparison.md").read_text()
    assert "DEMO DATA, not ImageNet" in table and "| Baseline |" in table and "| CutMix |" in table
    assert table.index("SCALE: ") < table.index("| method |")  # the caveat comes first
    assert capsys.readouterr().out.startswith("DEMO DATA, not ImageNet")  # before any training
    with (out / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["baseline", "cutmix"]
    for r in rows:
        for column in ("clean err", "C err (generated)", "RMS clean", "AUROC", "AUPR"):
            assert 0 <= float(r[column]) <= 100, column
        assert r["C-bar err"] == "" and r["P mFR"] == ""
    assert (out / "comparison.png").stat().st_size > 0
    assert (out / "cutmix" / "eval" / "table9.md").is_file()
    cells = datasets.imagenet_c_cells(out / "corruptions")  # the evaluation suite's layout
    assert {c.corruption for c in cells} == set(CORRUPTIONS) and len(cells) == 25
    capsys.readouterr()
    assert tool().main(argv) == 0  # finished methods are not trained again
    assert "training resnet18" not in capsys.readouterr().out


def test_sigterm_while_evaluating_stops_keeps_what_is_done_and_resumes(tmp_path):
    """`timeout` sends SIGTERM: the comparison stops at once with one error line and a
    non-zero status, keeps the trained run, and the same command resumes without training."""
    out = tmp_path / "cmp"
    sets = [a for item in TOY + [f"demo.root={tmp_path / 'demo'}"] for a in ("--set", item)]
    argv = ["--methods", "baseline", "--out", str(out), *sets]
    proc = subprocess.Popen([sys.executable, "-u", str(REPO / "tools" / "compare_methods.py"),
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    for line in proc.stdout:
        if line.startswith("== baseline: evaluating"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip()]
    assert lines[-1].startswith("error: stopped by SIGTERM: the methods trained and evaluated")
    assert "Traceback" not in err and sum(x.startswith("error:") for x in lines) == 1
    assert (out / "baseline" / "final.pt").is_file() and not (out / "comparison.md").exists()
    done = subprocess.run([sys.executable, str(REPO / "tools" / "compare_methods.py"), *argv],
                          capture_output=True, text=True, env=child_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "training resnet18" not in done.stdout and (out / "comparison.md").is_file()


def test_generated_corruptions_follow_their_definitions():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 216, (32, 32, 3), dtype=np.uint8)
    x = image / 255.0
    noisy = corrupt(image, "gaussian_noise", 3, np.random.default_rng(1)) / 255.0
    assert abs((noisy - x).std() - 0.18) < 0.01  # ImageNet-C severity 3: sigma 0.18
    low = corrupt(image, "contrast", 5, rng) / 255.0
    means = x.mean(axis=(0, 1))
    np.testing.assert_allclose(low, (x - means) * 0.05 + means, atol=1 / 255)
    blocky = corrupt(image, "pixelate", 5, rng)  # 32 * 0.25 = 8: blocks of 4 x 4
    pil = Image.fromarray(image).resize((8, 8), Image.BOX).resize((32, 32), Image.BOX)
    np.testing.assert_array_equal(blocky, np.asarray(pil))
    blurred = corrupt(image, "defocus_blur", 1, rng).astype(float)
    assert blurred.std() < image.std() * 0.8
    jpeg = [np.abs(corrupt(image, "jpeg_compression", s, rng) / 255.0 - x).mean()
            for s in (1, 5)]
    assert 0 < jpeg[0] < jpeg[1]  # quality 25 vs 7
    with pytest.raises(ValueError, match="severity 1..5"):
        corrupt(image, "fog", 1, rng)
