"""tools/make_fvis.py end to end on a small ResNet-18: names, sizes, activation gain, resume,
determinism and one-line errors."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.mixing import fvis
from dali_pixmix.models import load_fvis_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = ["--size", "32", "--steps", "2", "--channels", "2", "--layers", "layer1", "--no-progress"]


def load_tool():
    spec = importlib.util.spec_from_file_location("make_fvis", REPO / "tools" / "make_fvis.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def tool():
    return load_tool()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init ResNet-18, 10 classes, in this project's checkpoint format (arch stored)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pt"
    torch.save({"model": model.state_dict(), "arch": "resnet18",
                "classes": list(imagenet_wnids())[:10]}, path)
    return path


@pytest.fixture(scope="module")
def rendered(tool, checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("fvis")
    out, sheet = root / "fvis", root / "sheet.png"
    assert tool.main(["--checkpoint", str(checkpoint), "--layers", "relu,layer1", "--channels",
                      "3", "--size", "64", "--steps", "64", "--lr", "0.5", "--batch", "8",
                      "--no-progress", "--out", str(out), "--contact-sheet", str(sheet)]) == 0
    return out, sheet


def test_one_png_per_layer_and_channel_at_the_requested_size(rendered):
    out, sheet = rendered
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"{layer}_{c:04d}.png" for layer in ("layer1", "relu") for c in range(3)]
    for name in names:
        with Image.open(out / name) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
    assert np.asarray(Image.open(sheet)).shape == (128, 6 * 128, 3)


def test_target_activation_is_far_above_noise_and_fractal_pictures(rendered, checkpoint):
    out, _ = rendered
    summary = json.loads((out / fvis.SUMMARY_NAME).read_text())
    records = summary["pictures_detail"]
    assert len(records) == 6 and summary["arch"] == "resnet18"
    # A random-init network answers uniform noise strongly (white filters), hence the modest
    # bound against noise; a trained network gives far more (docs/data.md).
    for r in records:
        assert r["ratio_noise"] > 1.5 and r["ratio_fractal"] > 1.5, r
    assert summary["median_ratio_noise"] > 2 and summary["median_ratio_fractal"] > 4
    # The reported activation, recomputed with an explicit forward through the stem + layer1.
    model, _ = load_fvis_model(checkpoint)
    pixels = np.asarray(Image.open(out / "layer1_0002.png"), dtype=np.float32) / 255
    x = fvis.normalise(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    with torch.no_grad():
        act = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))[0, 2].mean()
    record = next(r for r in records if r["file"] == "layer1_0002.png")
    assert record["activation"] == pytest.approx(float(act), rel=1e-4)


def test_same_seed_gives_identical_pictures_and_another_seed_others(tool, checkpoint, tmp_path):
    runs = {"a": 0, "b": 0, "c": 1}
    for name, seed in runs.items():
        assert tool.main(["--checkpoint", str(checkpoint), *FAST, "--seed", str(seed),
                          "--out", str(tmp_path / name)]) == 0
    for picture in ("layer1_0000.png", "layer1_0001.png"):
        a, b, c = (np.asarray(Image.open(tmp_path / n / picture)) for n in runs)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_resume_skips_existing_pictures_and_renders_only_missing_ones(tool, checkpoint, tmp_path):
    out = tmp_path / "fvis"
    args = ["--checkpoint", str(checkpoint), *FAST, "--out", str(out)]
    assert tool.main(args) == 0
    first = np.asarray(Image.open(out / "layer1_0001.png"))
    marker = np.full((32, 32, 3), 7, np.uint8)
    Image.fromarray(marker).save(out / "layer1_0000.png")  # kept as is if skipped
    (out / "layer1_0001.png").unlink()
    assert tool.main(args) == 0
    assert np.array_equal(np.asarray(Image.open(out / "layer1_0000.png")), marker)
    again = np.asarray(Image.open(out / "layer1_0001.png"))
    # Same random draws; alone in its batch now, so only float rounding may differ.
    assert np.abs(again.astype(int) - first.astype(int)).max() <= 2
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(out / "layer1_0000.png")
    assert tool.main(args) == 2  # a picture of another size is named, not silently kept


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_layer_channel_count_and_checkpoint_are_one_error_line(tool, checkpoint, tmp_path,
                                                                   capsys):
    base = ["--size", "32", "--steps", "1", "--no-progress", "--out", str(tmp_path / "o")]
    assert tool.main(["--checkpoint", str(checkpoint), "--layers", "layer9", *base]) == 2
    line = one_error_line(capsys)
    assert "unknown layer 'layer9'" in line and "conv1, bn1, relu, maxpool, layer1" in line
    assert tool.main(["--checkpoint", str(checkpoint), "--layers", "layer1", "--channels", "65",
                      *base]) == 2
    assert "layer 'layer1' has 64 channels" in one_error_line(capsys)
    assert tool.main(["--checkpoint", str(tmp_path / "missing.pt"), *base]) == 2
    assert "missing.pt" in one_error_line(capsys)
    assert not list(tmp_path.glob("o/*.png"))


def test_a_layer_affine_in_the_image_is_warned_about(tool, checkpoint, tmp_path, capsys):
    assert tool.main(["--checkpoint", str(checkpoint), *FAST, "--channels", "1", "--steps", "1",
                      "--layers", "conv1,layer1", "--out", str(tmp_path / "o")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: ")]
    assert len(warnings) == 1 and "layer conv1 is an affine function" in warnings[0]


def test_torchvision_state_dict_needs_its_arch(tool, tmp_path, capsys):
    state = torchvision.models.resnet18().state_dict()  # bare, 1000 classes, no arch stored
    torch.save(state, tmp_path / "resnet18-tv.pth")
    args = ["--checkpoint", str(tmp_path / "resnet18-tv.pth"), *FAST, "--steps", "1",
            "--channels", "1", "--out", str(tmp_path / "o")]
    assert tool.main(args) == 2  # default arch resnet50 does not fit
    line = one_error_line(capsys)
    assert "resnet18-tv.pth" in line and "resnet50" in line and "--arch" in line
    assert tool.main(args + ["--arch", "resnet18"]) == 0
    assert (tmp_path / "o" / "layer1_0000.png").is_file()


def test_default_layers_are_rectified_and_give_no_flat_picture_warning(tool, checkpoint, tmp_path,
                                                                        capsys):
    out = tmp_path / "o"
    assert tool.main(["--checkpoint", str(checkpoint), "--size", "32", "--steps", "1",
                      "--channels", "1", "--no-progress", "--out", str(out)]) == 0
    assert "warning: " not in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["layer1_0000.png", "layer2_0000.png",
                                                          "relu_0000.png"]


def test_resume_only_with_the_same_checkpoint_and_settings(tool, checkpoint, tmp_path, capsys):
    """An --out made with another checkpoint or other settings is refused with the difference
    (before, its pictures were kept and credited to the new checkpoint in fvis_summary.json);
    the same weights in another file, or another --batch, resume."""
    out = tmp_path / "fvis"
    args = ["--checkpoint", str(checkpoint), *FAST, "--out", str(out)]
    assert tool.main(args) == 0
    pictures = {p.name: p.read_bytes() for p in out.glob("*.png")}
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save({"model": torchvision.models.resnet18(num_classes=10).state_dict(),
                "arch": "resnet18", "classes": list(imagenet_wnids())[:10]}, other)
    capsys.readouterr()
    assert tool.main(["--checkpoint", str(other), *FAST, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: --out {out} holds pictures made otherwise (checkpoint "
                           f"{checkpoint} (weights ")
    assert f") -> {other} (weights " in line and "use another --out" in line
    assert tool.main(args + ["--steps", "3", "--lr", "0.1"]) == 2
    assert "(steps 2 -> 3; lr 0.05 -> 0.1)" in one_error_line(capsys)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(checkpoint.read_bytes())
    assert tool.main(["--checkpoint", str(copy), *FAST, "--batch", "1", "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == pictures  # resumed: kept
    summary = json.loads((out / fvis.SUMMARY_NAME).read_text())
    assert summary["checkpoint"] == str(copy) and len(summary["weights"]) == 64
    (out / fvis.RECORD_NAME).unlink()  # pictures that record nothing (an older version's)
    assert tool.main(args) == 2
    assert "do not record the checkpoint and settings that made them" in one_error_line(capsys)
