"""ImageNet-P end to end on real H.264 videos (PyAV/libx264 fixtures), CPU decoding.

The script's numbers are checked against an independent computation: the test decodes each
video with PyAV itself, normalises with torchvision, runs the model in fp32 and applies the
(separately hand-tested) metric functions to those predictions.
"""
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from child_env import child_env

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.metrics import perturbation as pm

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "eval" / "imagenet_p.py"
CLASSES = list(imagenet_wnids()[:10])
VIDEO_CLASSES = CLASSES[3:5]
SIZE = 32


def synthetic_video(rng, frames, noise=False, max_freq=4.0):
    """Moving coloured sine patterns (+ growing noise): predictions of a random net flip."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    phase, freq = rng.uniform(0, 6, 3), rng.uniform(max_freq / 4, max_freq, 2)
    out = []
    for t in range(frames):
        img = np.stack([np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy) + 0.25 * t + phase[c])
                        for c in range(3)], -1) * 0.4 + 0.5
        if noise and t > 0:
            img = img + rng.normal(0, 0.3 * t / frames, img.shape)
        out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_video(path, frames, codec="libx264"):
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def make_tree(root, folders, rng, videos_per_class=1, codec="libx264", max_freq=4.0):
    for folder in folders:
        frames = 41 if folder == "translate" else 31
        for wnid in VIDEO_CLASSES:
            for i in range(videos_per_class):
                write_video(root / folder / wnid / f"v{i}.mp4",
                            synthetic_video(rng, frames, "noise" in folder, max_freq), codec)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("imagenet_p")
    root = base / "P"
    rng = np.random.default_rng(0)
    make_tree(root, pm.TEST_PERTURBATIONS + ("gaussian_noise_2",), rng)
    (root / "snow" / VIDEO_CLASSES[0] / "broken.mp4").write_bytes(b"not a video" * 50)
    write_video(root / "rotate" / VIDEO_CLASSES[1] / "short.mp4", synthetic_video(rng, 30))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CLASSES)).eval()
    ckpt = base / "model.pt"
    torch.save({"model": model.state_dict(), "arch": "resnet18", "classes": CLASSES}, ckpt)
    return root, ckpt, model


def independent_top5(model, folder):
    """[videos, frames, 5] in the script's video order (sorted wnid/name), skipping bad videos."""
    import av
    out = []
    for path in sorted(folder.glob("*/*.mp4")):
        try:
            with av.open(str(path)) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        except av.error.FFmpegError:
            continue
        if len(frames) != (41 if folder.name == "translate" else 31):
            continue
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        batch = torch.stack([TF.normalize(TF.to_tensor(f), mean, std) for f in frames])
        with torch.no_grad():
            out.append(model(batch).topk(5, dim=1).indices.numpy())
    return np.stack(out)


def run_script(*args):
    env = child_env(OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def load_main():
    """The script's entry point in-process, with its error handling (error line, status 2)."""
    spec = importlib.util.spec_from_file_location("eval_imagenet_p", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda argv: module.cli.run_cli(module.main, argv)


def rows_by_key(out):
    rows = json.loads((out / "results" / "imagenet_p.json").read_text())
    return {(r["variant"], r["severity"], r["metric"]): r for r in rows}


def test_script_matches_independent_predictions_and_resumes(setup, tmp_path, capsys):
    root, ckpt, model = setup
    out = tmp_path / "out"
    proc = run_script("--checkpoint", ckpt, "--root", root, "--out", out, "--device", "cpu",
                      "--batch-size", 64, "--num-threads", 2)
    assert proc.returncode == 0, proc.stderr
    assert "10 perturbations, 20 videos, 2 skipped, 0 from cache" in proc.stdout
    assert "evaluating with resize" not in proc.stdout  # frames are fed unresized
    rows = rows_by_key(out)
    fps, t5ds = {}, {}
    for p in pm.TEST_PERTURBATIONS:
        top5 = independent_top5(model, root / p)
        fps[p] = pm.flip_probability(top5[..., 0], noise=pm.is_noise(p))
        t5ds[p] = pm.top5_distance(top5, noise=pm.is_noise(p))
        assert rows[(p, 1, "flip_prob")]["value"] == pytest.approx(100 * fps[p], abs=1e-9), p
        assert rows[(p, 1, "ut5d_ranks")]["value"] == pytest.approx(t5ds[p], abs=1e-9), p
        assert rows[(p, 1, "fr")]["value"] == pytest.approx(100 * fps[p] / pm.ALEXNET_FP[p])
        assert rows[(p, 1, "flip_prob")]["n"] == 2
    assert sum(fps.values()) > 0, "fixture videos should make the model's predictions flip"
    assert rows[("mean", None, "mfr")]["value"] == pytest.approx(pm.mfr(fps))
    assert rows[("mean", None, "mt5d")]["value"] == pytest.approx(pm.mt5d(t5ds))
    assert "difficulty=1,fp32,pyav" in rows[("mean", None, "mfr")]["protocol"]
    details = json.loads((out / "imagenet_p_details.json").read_text())["perturbations"]
    table9 = (out / "table9.md").read_text()
    model_row = next(line for line in table9.splitlines() if line.startswith("| this model"))
    assert f"| - | {pm.mfr(fps):.1f} | {pm.mt5d(t5ds):.1f} | -" in model_row
    assert [s[0] for s in details["snow"]["skipped"]] == [f"{VIDEO_CLASSES[0]}/broken"]
    assert details["rotate"]["skipped"][0][1] == "has 30 frames, expected 31"
    assert (out / "plots" / "imagenet_p_flip_rates.png").read_bytes()[:4] == b"\x89PNG"
    # Resume: every perturbation comes from its cache, with the same numbers.
    assert load_main()(["--checkpoint", str(ckpt), "--root", str(root), "--out", str(out),
                        "--device", "cpu"]) == 0
    assert "10 from cache" in capsys.readouterr().out
    assert rows_by_key(out) == rows
    # The suite's run_all runs the registered task on the same cache.
    spec = importlib.util.spec_from_file_location("eval_run_all", REPO / "eval" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    assert run_all.cli.run_cli(run_all.main, ["--checkpoint", str(ckpt), "--out", str(out),
                                              "--device", "cpu", "--imagenet-p", str(root),
                                              "--no-synthetic"]) == 0
    assert "10 from cache" in capsys.readouterr().out
    assert rows_by_key(out) == rows


def test_difficulty_two_reads_noise_folders_and_skips_normalised(setup, tmp_path, capsys):
    root, ckpt, model = setup
    out = tmp_path / "out"
    assert load_main()(["--checkpoint", str(ckpt), "--root", str(root), "--out", str(out),
                        "--device", "cpu", "--difficulty", "2",
                        "--perturbations", "gaussian_noise,tilt"]) == 0
    assert "no mFR" in capsys.readouterr().out
    rows = rows_by_key(out)
    noise = independent_top5(model, root / "gaussian_noise_2")[..., 0]
    tilt = independent_top5(model, root / "tilt")[..., 0]
    assert rows[("gaussian_noise", 2, "flip_prob")]["value"] == pytest.approx(
        100 * pm.flip_probability(noise, noise=True))
    assert rows[("tilt", 2, "flip_prob")]["value"] == pytest.approx(
        100 * pm.flip_probability(tilt, noise=False, difficulty=2))
    assert not any(m in ("fr", "t5d", "mfr", "mt5d") for _, _, m in rows)


def test_folder_errors_are_clear(setup, tmp_path, capsys):
    root, ckpt, _ = setup
    main = load_main()
    common = ["--checkpoint", str(ckpt), "--out", str(tmp_path), "--device", "cpu"]
    cases = [
        (["--root", str(tmp_path / "nowhere")], "ImageNet-P root not found"),
        # gaussian_noise_3 does not exist: the missing folder is named before any decoding.
        (["--root", str(root), "--difficulty", "3", "--perturbations", "gaussian_noise"],
         "gaussian_noise_3"),
        (["--root", str(root), "--perturbations", "gaussian_nosie"],
         "unknown ImageNet-P perturbation"),
    ]
    stranger = tmp_path / "P2"
    write_video(stranger / "tilt" / "n99999999" / "a.mp4",
                synthetic_video(np.random.default_rng(1), 31))
    cases.append((["--root", str(stranger), "--perturbations", "tilt"],
                  "not in the model's class list"))
    for args, message in cases:
        assert main(common + args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err


def test_dali_decoder_path_on_cpu_matches_pyav(tmp_path):
    """The DALI backend's batching and broken-file isolation, exercised with VP9 on the CPU."""
    from dali_pixmix.evaluation.video import VideoReader, list_videos
    rng = np.random.default_rng(2)
    make_tree(tmp_path, ["tilt"], rng, videos_per_class=2, codec="libvpx-vp9", max_freq=1.0)
    (tmp_path / "tilt" / VIDEO_CLASSES[0] / "v1b.mp4").write_bytes(b"\x00" * 300)
    entries = list_videos(tmp_path / "tilt", CLASSES)
    dali = VideoReader(entries, 31, "cpu", normalize=False, backend="dali", batch_videos=3)
    pyav = VideoReader(entries, 31, "cpu", normalize=False, backend="pyav")
    got, want = list(dali), list(pyav)
    assert [c.name for c in got] == [c.name for c in want] and len(got) == 4
    assert [c.label for c in got] == [3, 3, 4, 4]
    for a, b in zip(got, want):
        assert a.frames.shape == (31, SIZE, SIZE, 3)
        # Different chroma upsampling / YUV->RGB rounding: close on smooth content, not equal.
        assert (a.frames.float() - b.frames.float()).abs().mean() < 6
    # ...while a different video is far away (the tolerance cannot hide a mix-up).
    assert (got[0].frames.float() - want[1].frames.float()).abs().mean() > 15
    assert [s[0] for s in dali.skipped] == [f"{VIDEO_CLASSES[0]}/v1b"]


def test_ranks_split_videos_without_overlap(setup):
    """Each global rank decodes a disjoint strided share; together they cover every video."""
    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.imagenet_p import evaluate_folder
    from dali_pixmix.evaluation.video import list_videos
    root, _, model = setup
    entries = list_videos(root / "snow", CLASSES)          # 2 good videos + 1 broken, sorted
    kwargs = dict(batch_frames=64, amp=False, backend="pyav")
    whole = evaluate_folder(model, entries, "snow", "snow", DistInfo(), **kwargs)
    # Without a process group the gather returns only the local share: exactly what a rank sees.
    parts = [evaluate_folder(model, entries, "snow", "snow", DistInfo(rank=r, world_size=2),
                             **kwargs) for r in range(2)]
    names = [e.name for e in entries]
    for rank, part in enumerate(parts):
        assert sorted(part.names + [s[0] for s in part.skipped]) == sorted(names[rank::2])
        rows = [whole.names.index(n) for n in part.names]
        np.testing.assert_array_equal(part.top5, whole.top5[rows])
    assert sorted(parts[0].names + parts[1].names) == sorted(whole.names)


def test_truncated_cache_is_recomputed_with_a_warning(setup, tmp_path, caplog):
    from dali_pixmix.distributed import DistInfo
    from dali_pixmix.evaluation.imagenet_p import evaluate_perturbation
    from dali_pixmix.evaluation.video import list_videos
    root, _, model = setup
    entries = list_videos(root / "tilt", CLASSES)
    kwargs = dict(cache_dir=tmp_path, fingerprint="model-x", batch_frames=64, amp=False,
                  backend="pyav")
    first = evaluate_perturbation(model, entries, "tilt", 1, DistInfo(), **kwargs)
    path = tmp_path / "tilt.npz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING):
        again = evaluate_perturbation(model, entries, "tilt", 1, DistInfo(), **kwargs)
    assert f"cannot read cache {path}" in caplog.text
    assert not again.from_cache and again.names == first.names
    np.testing.assert_array_equal(again.top5, first.top5)
    cached = evaluate_perturbation(model, entries, "tilt", 1, DistInfo(), **kwargs)
    assert cached.from_cache and np.array_equal(cached.top5, first.top5)  # rewritten whole
