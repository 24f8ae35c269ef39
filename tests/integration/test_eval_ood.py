"""eval/ood.py on generated trees, and the seeded synthetic anomaly sets."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.evaluation import Evaluator, cli
from dali_pixmix.evaluation.synthetic_ood import synthetic_image, write_synthetic_set
from dali_pixmix.metrics.ood import ood_metrics
from dali_pixmix.models import build_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WNIDS = list(imagenet_wnids()[:4])


def ood_script():
    spec = importlib.util.spec_from_file_location("eval_script_ood", REPO / "eval" / "ood.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_png(path: Path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_synthetic_images_follow_their_definitions():
    g = synthetic_image("gaussian", 64, np.random.default_rng(0)).astype(float)
    # x = clip(N(0, .5), -1, 1) -> pixels centred on 127.5, P(x > 1) = P(z > 2) = 2.3%
    assert abs(g.mean() - 127.5) < 3 and 0.02 < np.mean(g == 255) < 0.03
    r = synthetic_image("rademacher", 64, np.random.default_rng(0))
    assert set(np.unique(r)) == {0, 255} and abs(np.mean(r == 255) - 0.5) < 0.02
    b = synthetic_image("blobs", 64, np.random.default_rng(0))
    values = np.unique(b)
    assert values[0] == 0 and 191 <= values[1] <= 193  # kept blob values b >= 0.75 -> pixel b * 255
    with pytest.raises(ValueError, match="unknown synthetic OOD set"):
        synthetic_image("plasma", 8, np.random.default_rng(0))


def test_synthetic_sets_are_seeded_and_reused(tmp_path):
    a = write_synthetic_set("blobs", tmp_path / "a", 3, size=16, seed=5)
    b = write_synthetic_set("blobs", tmp_path / "b", 3, size=16, seed=5)
    c = write_synthetic_set("blobs", tmp_path / "c", 3, size=16, seed=6)
    read = lambda f: np.asarray(Image.open(f))  # noqa: E731
    assert all(np.array_equal(read(x), read(y)) for x, y in zip(a, b))
    assert not np.array_equal(read(a[0]), read(c[0]))
    stamp = Path(a[0]).stat().st_mtime_ns
    write_synthetic_set("blobs", tmp_path / "a", 3, size=16, seed=5)
    assert Path(a[0]).stat().st_mtime_ns == stamp


def test_ood_cli_folders_lists_and_synthetic(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for w in WNIDS:
        for i in range(3):
            pixels = rng.integers(0, 255, (32, 32, 3), np.uint8)
            write_png(tmp_path / "val" / w / f"{i}.png", pixels)
    for i in range(5):  # flat, bright images at depth 2
        pixels = np.full((32, 32, 3), 250 - i, np.uint8)
        write_png(tmp_path / "textures" / "sub" / f"{i}.png", pixels)
    (tmp_path / "list.txt").write_text("textures/sub/0.png\ntextures/sub/1.png\n")
    torch.manual_seed(0)
    torch.save({"model": build_model("resnet18", 4).state_dict(), "arch": "resnet18",
                "classes": WNIDS}, tmp_path / "m.pt")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tmp_path / "m.pt"), "--out", str(out), "--val",
            str(tmp_path / "val"), "--ood", f"textures={tmp_path / 'textures'}",
            f"listed={tmp_path / 'list.txt'}", "--synthetic-count", "4", "--resize", "36",
            "--crop", "32", "--batch-size", "4", "--num-threads", "1", "--device", "cpu"]
    assert cli.run_cli(ood_script().main, argv) == 0
    rows = json.loads((out / "results" / "ood.json").read_text())
    sets = {r["dataset"] for r in rows}
    assert sets == {"textures", "listed", "gaussian", "rademacher", "blobs", "mean"}
    assert {r["variant"] for r in rows} == {"msp", "maxlogit", "energy"}
    assert all(0 <= r["value"] <= 100 for r in rows)
    # per-set values match the metric recomputed from the cached scores
    inside = np.load(out / "cache" / "clean" / "val.npz")
    outside = np.load(out / "cache" / "ood" / "textures.npz")
    auroc = ood_metrics(inside["energy"], outside["energy"])["auroc"] * 100
    hit = [r for r in rows if r["dataset"] == "textures" and r["variant"] == "energy"
           and r["metric"] == "auroc"]
    assert hit[0]["value"] == pytest.approx(auroc) and hit[0]["n"] == 5
    mean = [r for r in rows if r["dataset"] == "mean" and r["variant"] == "msp"
            and r["metric"] == "aupr"][0]["value"]
    per_set = [r["value"] for r in rows if r["dataset"] != "mean" and r["variant"] == "msp"
               and r["metric"] == "aupr"]
    assert mean == pytest.approx(np.mean(per_set)) and len(per_set) == 5
    assert not (out / "ood_synthetic").exists()  # nothing written to disk
    # generated in memory == the same images written as PNG and read through DALI unresized
    ev = Evaluator.from_checkpoint(tmp_path / "m.pt", tmp_path / "files", device="cpu",
                                   batch_size=4, resize=36, crop=32, num_threads=1,
                                   progress=False)
    for kind in ("gaussian", "blobs"):
        files = write_synthetic_set(kind, tmp_path / "synthetic" / kind, 4, size=32, seed=0)
        via_files = ev.infer(files, np.zeros(4, dtype=np.int64), no_resize=True)
        cached = np.load(out / "cache" / "ood" / f"{kind}.npz")
        np.testing.assert_allclose(cached["energy"], via_files.energy, rtol=1e-4)
        assert cached["energy"].shape == (4,)
    printed = capsys.readouterr().out
    assert "anomalies (OOD) are the positive class" in printed
    assert "the lowest such threshold when several give the same recall" in printed
    table = (out / "table9.md").read_text().splitlines()[5].split(" | ")
    assert table[-2] != "-" and table[-1].rstrip(" |") != "-"


def test_synthetic_count_below_one_is_one_error_line(tmp_path, capsys):
    """0 once silently meant the default (1/5 of the val count), a negative count an empty set."""
    for i, w in enumerate(WNIDS):
        write_png(tmp_path / "val" / w / "0.png", np.full((32, 32, 3), 60 * i, np.uint8))
    torch.save({"model": build_model("resnet18", 4).state_dict(), "arch": "resnet18",
                "classes": WNIDS}, tmp_path / "m.pt")
    argv = ["--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "out"), "--val",
            str(tmp_path / "val"), "--batch-size", "4", "--num-threads", "1", "--device", "cpu"]
    for count in ("0", "-3"):
        assert cli.run_cli(ood_script().main, argv + ["--synthetic-count", count]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --synthetic-count must be at least 1")
    assert not (tmp_path / "out" / "results").exists()


def test_ood_inputs_and_out_are_checked_before_any_inference(tmp_path, capsys):
    """An empty --ood folder, no anomaly set at all, one name given twice (which silently
    dropped a set) and an unwritable --out: one error line each, before the in-distribution
    inference (nothing cached)."""
    for i, w in enumerate(WNIDS):
        write_png(tmp_path / "val" / w / "0.png", np.full((32, 32, 3), 60 * i, np.uint8))
        write_png(tmp_path / "a" / f"{i}.png", np.full((32, 32, 3), 9 * i, np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder\n")
    torch.save({"model": build_model("resnet18", 4).state_dict(), "arch": "resnet18",
                "classes": WNIDS}, tmp_path / "m.pt")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tmp_path / "m.pt"), "--val", str(tmp_path / "val"),
            "--batch-size", "4", "--num-threads", "1", "--device", "cpu"]
    cases = [(["--out", str(out), "--ood", f"empty={tmp_path / 'empty'}"], str(tmp_path / "empty")),
             (["--out", str(out), "--no-synthetic"], "no OOD sets: pass --ood NAME=PATH"),
             (["--out", str(out), "--ood", f"fr={tmp_path / 'a'}", f"fr={tmp_path / 'val'}"],
              f"--ood names two sets 'fr' ({tmp_path / 'a'} and {tmp_path / 'val'}); give each "
              "set its own name"),
             (["--out", str(tmp_path / "a_file" / "out")],
              f"--out {tmp_path / 'a_file' / 'out'} is not writable")]
    for extra, named in cases:
        assert cli.run_cli(ood_script().main, argv + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and named in err[0], (extra, err)
        assert not (out / "cache").exists(), extra  # no inference ran
