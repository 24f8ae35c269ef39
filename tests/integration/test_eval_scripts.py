"""The eval/*.py scripts end to end on generated tiny trees, through the real DALI CPU pipeline.

Faithfulness: with PNG images already at the crop size and the unresized protocol, the model
sees the decoded pixels unchanged, so per-cell errors must equal an independent PIL + torch
forward pass of the same checkpoint.
"""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from entry_points import load_script
from PIL import Image

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from dali_pixmix.evaluation import cli
from dali_pixmix.metrics import corruption
from dali_pixmix.models import build_model, load_classifier

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WNIDS = list(imagenet_wnids()[:6])
SMALL = ["--batch-size", "4", "--num-threads", "1", "--calibration-bin-size", "4",
         "--device", "cpu"]


def script(name):
    return load_script(f"eval/{name}.py")


def write_images(folder: Path, count: int, size, seed: int, ext: str = ".png"):
    """Textured random images; size = (h, w)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = rng.uniform(0, 255, size=3)
        noise = rng.uniform(-80, 80, size=(*size, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"im{i}{ext}")


def class_tree(root: Path, wnids, per_class, size, seed, ext=".png"):
    for k, w in enumerate(wnids):
        write_images(root / w, per_class, size, seed * 100 + k, ext)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    torch.manual_seed(0)
    model = build_model("resnet18", 6)
    torch.save({"model": model.state_dict(), "arch": "resnet18", "classes": WNIDS}, root / "m.pt")
    class_tree(root / "val", WNIDS, 2, (40, 48), 1, ".JPEG")
    for c, seed in (("gaussian_noise", 2), ("fog", 3)):
        for s in range(1, 6):
            class_tree(root / "c" / c / str(s), WNIDS[:4], 2, (32, 32), seed * 10 + s)
    for s, name in enumerate(["0.5", "10.0", "2.35", "3", "7.25"]):
        class_tree(root / "cbar" / "sparkles" / name, WNIDS[:2], 2, (32, 32), 90 + s)
    class_tree(root / "r", [WNIDS[1], WNIDS[2], WNIDS[4], WNIDS[5]], 2, (36, 36), 7, ".jpg")
    return root


def rows_of(out: Path, task: str):
    return json.loads((out / "results" / f"{task}.json").read_text())


def pick(rows, metric, **where):
    hits = [r for r in rows if r["metric"] == metric and all(r[k] == v for k, v in where.items())]
    assert len(hits) == 1, (metric, where, hits)
    return hits[0]["value"]


def pil_errors(ckpt: Path, folder: Path, wnids) -> float:
    """Independent top-1 error of images fed as is: PIL decode, normalise, forward."""
    model, classes = load_classifier(ckpt, device="cpu")
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    images, labels = [], []
    for w in wnids:
        for f in sorted((folder / w).iterdir()):
            pixels = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
            images.append((pixels.float() / 255 - mean) / std)
            labels.append(classes.index(w))
    with torch.no_grad():
        pred = model(torch.stack(images)).argmax(1)
    return 100 * float((pred != torch.tensor(labels)).float().mean())


def clean_argv(data: Path, out: Path):
    return ["--checkpoint", str(data / "m.pt"), "--out", str(out), "--val", str(data / "val"),
            "--resize", "36", "--crop", "32", *SMALL]


def test_clean_rows_labels_and_report(data, tmp_path):
    out = tmp_path / "out"
    assert cli.run_cli(script("clean").main, clean_argv(data, out)) == 0
    rows = rows_of(out, "clean")
    assert {r["metric"] for r in rows} == {"top1_error", "top5_error", "rms", "rms_all_bins", "ece"}
    assert all(r["n"] == 12 and r["protocol"] == "resize36-crop32" for r in rows)
    cache = np.load(out / "cache" / "clean" / "val.npz", allow_pickle=False)
    np.testing.assert_array_equal(cache["labels"], np.repeat(np.arange(6), 2))
    expected = 100 * np.mean(cache["top5"][:, 0] != cache["labels"])
    assert pick(rows, "top1_error") == pytest.approx(expected)
    assert pick(rows, "top5_error") <= pick(rows, "top1_error")
    table = (out / "table9.md").read_text().splitlines()
    assert table[5].startswith(f"| this model | {pick(rows, 'top1_error'):.1f} | - |")
    assert (out / "plots" / "reliability_clean.png").stat().st_size > 1000


def test_evaluation_defaults_to_the_size_the_checkpoint_records(data, tmp_path, capsys):
    """A checkpoint trained and validated at 36/32 is evaluated at 36/32 unless a flag says
    otherwise (the ImageNet 256/224 would silently cost accuracy); the rows name the sizes."""
    ckpt = torch.load(data / "m.pt", weights_only=True)
    ckpt["config"] = {"data": {"val_resize": 36, "val_crop": 32}}
    torch.save(ckpt, tmp_path / "recorded.pt")
    base = ["--checkpoint", str(tmp_path / "recorded.pt"), "--val", str(data / "val"), *SMALL]
    assert script("clean").main([*base, "--out", str(tmp_path / "a")]) == 0
    assert {r["protocol"] for r in rows_of(tmp_path / "a", "clean")} == {"resize36-crop32"}
    assert ("evaluating with resize 36 (the checkpoint's data.val_resize), crop 32 (the "
            "checkpoint's data.val_crop)") in capsys.readouterr().out
    assert script("clean").main([*base, "--out", str(tmp_path / "b"), "--crop", "28"]) == 0
    assert {r["protocol"] for r in rows_of(tmp_path / "b", "clean")} == {"resize36-crop28"}
    said = capsys.readouterr().out  # only the size no flag gave
    assert "evaluating with resize 36 (the checkpoint's data.val_resize)\n" in said
    with pytest.raises(ValueError, match="--crop 40 is larger than --resize 36"):
        script("clean").main([*base, "--out", str(tmp_path / "c"), "--crop", "40"])


def test_truncated_cache_is_recomputed_with_a_warning(data, tmp_path, caplog):
    out = tmp_path / "out"
    argv = clean_argv(data, out)
    assert cli.run_cli(script("clean").main, argv) == 0
    first = rows_of(out, "clean")
    path = out / "cache" / "clean" / "val.npz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted copy, a full disk
    with caplog.at_level(logging.WARNING):
        assert cli.run_cli(script("clean").main, argv) == 0
    assert f"cannot read cache {path}" in caplog.text
    assert rows_of(out, "clean") == first
    assert np.load(path)["labels"].shape == (12,)  # rewritten whole


def test_imagenet_c_partial_matches_independent_forward(data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--checkpoint", str(data / "m.pt"), "--out", str(out), "--root", str(data / "c"),
            "--protocol", "unresized", "--resize", "36", "--crop", "32", *SMALL]
    assert cli.run_cli(script("imagenet_c").main, argv) == 0
    rows = rows_of(out, "imagenet_c")
    errors = {}
    for c in ("gaussian_noise", "fog"):
        for s in range(1, 6):
            want = pil_errors(data / "m.pt", data / "c" / c / str(s), WNIDS[:4])
            assert pick(rows, "error", variant=c, severity=s) == pytest.approx(want)
            errors.setdefault(c, []).append(want / 100)
    partial = [r for r in rows if r["metric"] == "mce_partial"]
    assert partial[0]["variant"] == "partial: 2 of 15 corruptions"
    assert partial[0]["value"] == pytest.approx(corruption.mce(errors, list(errors)))
    assert not [r for r in rows if r["metric"] == "mce"]
    # AlexNet normalisation: fog's CE divides by AlexNet's fog errors
    assert pick(rows, "ce", variant="fog") == pytest.approx(
        100 * np.sum(errors["fog"]) / np.sum(corruption.ALEXNET_ERRORS["fog"]))
    assert {r["protocol"] for r in rows} == {"unresized:centercrop32"}
    assert "partial: 2 of 15" in capsys.readouterr().out
    assert "C mCE, RMS C over 2 of 15 corruptions (a partial set)" in \
        (out / "table9.md").read_text()


def test_imagenet_c_protocol_changes_inputs(data, tmp_path):
    base = ["--checkpoint", str(data / "m.pt"), "--root", str(data / "c"), "--resize", "36",
            "--crop", "32", "--corruptions", "fog", *SMALL]
    conf = {}
    for protocol in ("unresized", "pixmix"):
        out = tmp_path / protocol
        assert script("imagenet_c").main([*base, "--out", str(out), "--protocol", protocol]) == 0
        conf[protocol] = np.load(out / "cache" / "imagenet_c" / "fog_3.npz")["confidence"]
        assert {r["protocol"] for r in rows_of(out, "imagenet_c")} == {
            "unresized:centercrop32" if protocol == "unresized" else "pixmix:resize36-crop32"}
    assert not np.allclose(conf["unresized"], conf["pixmix"])


def test_imagenet_c_bad_folders_are_one_error_line(data, tmp_path, capsys):
    bad = tmp_path / "c"
    class_tree(bad / "fog" / "1", WNIDS[:1], 1, (8, 8), 0)
    argv = ["--checkpoint", str(data / "m.pt"), "--out", str(tmp_path / "o"), "--root", str(bad),
            *SMALL]
    assert cli.run_cli(script("imagenet_c").main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "severity folders 1..5" in err[0]


def test_cbar_float_severities(data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--checkpoint", str(data / "m.pt"), "--out", str(out), "--root", str(data / "cbar"),
            "--crop", "32", "--protocol", "unresized", *SMALL]
    assert cli.run_cli(script("imagenet_cbar").main, argv) == 0
    rows = rows_of(out, "imagenet_cbar")
    # numeric order 0.5 < 2.35 < 3 < 7.25 < 10.0 -> severities 1..5
    for severity, folder in enumerate(["0.5", "2.35", "3", "7.25", "10.0"], start=1):
        want = pil_errors(data / "m.pt", data / "cbar" / "sparkles" / folder, WNIDS[:2])
        assert pick(rows, "error", variant="sparkles", severity=severity) == pytest.approx(want)
    cells = [r["value"] for r in rows if r["metric"] == "error"]
    assert pick(rows, "mean_error") == pytest.approx(np.mean(cells))
    assert "sorted numerically" in capsys.readouterr().out


def boosted_checkpoint(src: Path, dst: Path, wnids):
    """Same model, but classes `wnids` get a +100 logit bias: they win every unmasked argmax."""
    ckpt = torch.load(src, weights_only=True)
    for w in wnids:
        ckpt["model"]["fc.bias"][WNIDS.index(w)] += 100.0
    torch.save(ckpt, dst)
    return dst


def test_imagenet_r_mask_ignores_classes_outside_the_subset(data, tmp_path):
    boosted = boosted_checkpoint(data / "m.pt", tmp_path / "boost.pt", [WNIDS[0], WNIDS[3]])
    results = {}
    for name, ckpt in (("plain", data / "m.pt"), ("boosted", boosted)):
        out = tmp_path / name
        argv = ["--checkpoint", str(ckpt), "--out", str(out), "--root", str(data / "r"),
                "--resize", "36", "--crop", "32", *SMALL]
        assert script("imagenet_r").main(argv) == 0
        results[name] = (rows_of(out, "imagenet_r"),
                         np.load(out / "cache" / "imagenet_r" / "r.npz")["confidence"])
    assert pick(results["plain"][0], "top1_error") == pick(results["boosted"][0], "top1_error")
    np.testing.assert_allclose(results["plain"][1], results["boosted"][1], rtol=1e-5)
    assert "logits-masked-to-4-classes" in results["plain"][0][0]["protocol"]
    # without the mask the boosted classes take every prediction: 100% error
    out = tmp_path / "unmasked"
    argv = ["--checkpoint", str(boosted), "--out", str(out), "--val", str(data / "r"),
            "--resize", "36", "--crop", "32", *SMALL]
    assert script("clean").main(argv) == 0
    assert pick(rows_of(out, "clean"), "top1_error") == 100.0


def test_imagenet_r_unknown_class_is_clear_error(data, tmp_path, capsys):
    r = class_tree(tmp_path / "r", [imagenet_wnids()[500]], 1, (8, 8), 0)
    argv = ["--checkpoint", str(data / "m.pt"), "--out", str(tmp_path / "o"), "--root", str(r),
            *SMALL]
    assert cli.run_cli(script("imagenet_r").main, argv) == 2
    assert "not in the model's class list" in capsys.readouterr().err


def test_run_all_yaml_and_cache_reuse(data, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "datasets.yaml"
    config.write_text(f"clean: {data / 'val'}\nimagenet_r: {data / 'r'}\n")
    argv = ["--checkpoint", str(data / "m.pt"), "--out", str(out), "--config", str(config),
            "--resize", "36", "--crop", "32", *SMALL]
    run_all = script("run_all")
    assert run_all.main(argv) == 0
    table = (out / "table9.md").read_text().splitlines()[5].split(" | ")
    clean, r_err = table[1], table[4]
    assert clean != "-" and r_err != "-" and table[2] == "-"
    caches = sorted((out / "cache").rglob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in caches]
    assert run_all.main(argv) == 0  # second run reads every cell from the cache
    assert [p.stat().st_mtime_ns for p in caches] == stamps
    config.write_text(f"clean: {data / 'val'}\nimagenet_c: {data / 'cbar'}\n")
    with pytest.raises(ValueError, match="unknown ImageNet-C corruption folders \\['sparkles'\\]"):
        run_all.main(argv)  # checked before clean runs again
    config.write_text("imagenet_q: somewhere\n")
    with pytest.raises(ValueError, match="unknown keys \\['imagenet_q'\\]"):
        run_all.main(argv)


def test_data_root_discovery(data, tmp_path):
    from dali_pixmix.evaluation.registry import configured_tasks, discover
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "val").symlink_to(data / "val")
    (tmp_path / "imagenet-r").symlink_to(data / "r")
    (tmp_path / "ood" / "textures").mkdir(parents=True)
    cfg = discover(tmp_path)
    assert cfg == {"clean": str(tmp_path / "imagenet" / "val"),
                   "imagenet_r": str(tmp_path / "imagenet-r"),
                   "ood": {"textures": str(tmp_path / "ood" / "textures")}}
    assert configured_tasks(cfg) == ["clean", "imagenet_r", "ood"]
    assert configured_tasks({"imagenet_c": "x", "synthetic_ood": True}) == ["imagenet_c"]


def test_a_data_root_without_known_folders_says_so(tmp_path):
    """--data-root was passed: the error names what it looked for, not "pass --data-root"."""
    (tmp_path / "root" / "ImageNet_val").mkdir(parents=True)
    argv = ["--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "out"),
            "--data-root", str(tmp_path / "root")]
    with pytest.raises(ValueError) as err:
        script("run_all").main(argv)
    assert str(err.value).startswith(f"--data-root {tmp_path / 'root'} holds none of the "
                                     "dataset folders looked for (imagenet/val or val, "
                                     "imagenet-c or ImageNet-C, ")
    assert "ood/<name>" in str(err.value)


def test_torchvision_state_dict_labels_follow_sorted_wnids(tmp_path):
    all_wnids = imagenet_wnids()
    picked = [all_wnids[10], all_wnids[500], all_wnids[999]]
    val = class_tree(tmp_path / "val", picked, 1, (32, 32), 3)
    torch.manual_seed(0)
    torch.save(build_model("resnet18", 1000).state_dict(), tmp_path / "tv.pth")  # bare
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tmp_path / "tv.pth"), "--arch", "resnet18", "--out", str(out),
            "--val", str(val), "--resize", "32", "--crop", "32", *SMALL]
    assert script("clean").main(argv) == 0
    cache = np.load(out / "cache" / "clean" / "val.npz")
    np.testing.assert_array_equal(cache["labels"], [10, 500, 999])


def test_results_belong_to_one_checkpoint_and_caches_follow_its_weights(data, tmp_path,
                                                                         capsys, caplog):
    """Rows name the checkpoint and its weights. The same weights saved again (a rerun
    training rewriting final.pt, a copy) keep every cache; another model's evaluation into
    the folder is refused before any inference, and what is there stays as it was."""
    from dali_pixmix.checkpoint import checkpoint_identity, read_checkpoint

    out = tmp_path / "out"
    assert cli.run_cli(script("clean").main, clean_argv(data, out)) == 0
    weights = checkpoint_identity(read_checkpoint(data / "m.pt"))[:16]
    rows = rows_of(out, "clean")
    assert {(r["checkpoint"], r["weights"]) for r in rows} == {(str(data / "m.pt"), weights)}
    cache = out / "cache" / "clean" / "val.npz"
    stamp = cache.stat().st_mtime_ns
    same = tmp_path / "final.pt"  # the same weights in a new file (other time, other keys)
    saved = torch.load(data / "m.pt", weights_only=True)
    torch.save({**saved, "step": 7}, same)
    argv = clean_argv(data, out)
    argv[1] = str(same)
    with caplog.at_level(logging.WARNING):
        assert cli.run_cli(script("clean").main, argv) == 0
    assert "another checkpoint" not in caplog.text and cache.stat().st_mtime_ns == stamp
    assert {r["checkpoint"] for r in rows_of(out, "clean")} == {str(same)}

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save({**saved, "model": build_model("resnet18", 6).state_dict()}, other)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    argv[1] = str(other)
    assert cli.run_cli(script("ood").main, argv[:-len(SMALL)] + SMALL) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: --out {out} holds the results of {same} (weights {weights}); the "
                      f"results of {other} (weights "
                      f"{checkpoint_identity(read_checkpoint(other))[:16]}) would mix with them "
                      f"in one table: pass another --out, or delete {out / 'results'} to "
                      "replace them"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
