"""ImageNet-P on the GPU: DALI/NVDEC decoding of H.264 and the CUDA evaluation path."""
import numpy as np
import pytest
import torch
import torchvision

from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.distributed import DistInfo
from dali_pixmix.evaluation.video import VideoReader, decode_pyav, list_videos

pytestmark = pytest.mark.gpu

CLASSES = list(imagenet_wnids()[:10])
SIZE = 64


def smooth_video(rng, frames):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    phase, freq = rng.uniform(0, 6, 3), rng.uniform(0.3, 1.0, 2)
    out = []
    for t in range(frames):
        img = np.stack([np.sin(2 * np.pi * (freq[0] * xx + freq[1] * yy) + 0.2 * t + phase[c])
                        for c in range(3)], -1) * 0.4 + 0.5
        out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_h264(path, frames):
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("p_gpu")
    rng = np.random.default_rng(0)
    for folder, frames in (("tilt", 31), ("translate", 41), ("gaussian_noise", 31)):
        for wnid in CLASSES[:2]:
            for i in range(3):
                write_h264(root / folder / wnid / f"v{i}.mp4", smooth_video(rng, frames))
    (root / "tilt" / CLASSES[0] / "broken.mp4").write_bytes(b"\x00\x00\x01" * 100)
    write_h264(root / "tilt" / CLASSES[1] / "short.mp4", smooth_video(rng, 29))
    return root


def test_nvdec_matches_pyav_and_reports_bad_videos(tree):
    entries = list_videos(tree / "tilt", CLASSES)
    reader = VideoReader(entries, 31, "cuda", normalize=False, backend="dali", batch_videos=4)
    clips = list(reader)
    assert sorted(n for n, _ in reader.skipped) == [f"{CLASSES[0]}/broken", f"{CLASSES[1]}/short"]
    assert len(clips) == 6
    for clip, entry in zip(clips, [e for e in entries if e.name in {c.name for c in clips}]):
        assert clip.frames.is_cuda and clip.frames.shape == (31, SIZE, SIZE, 3)
        reference = torch.from_numpy(decode_pyav(entry.path)).cuda().float()
        assert (clip.frames.float() - reference).abs().mean() < 6, clip.name


def test_normalised_frames_on_gpu_match_cpu(tree):
    entries = list_videos(tree / "translate", CLASSES)[:2]
    gpu = [c.frames for c in VideoReader(entries, 41, "cuda", backend="dali")]
    cpu = [c.frames for c in VideoReader(entries, 41, "cpu", backend="pyav")]
    for g, c in zip(gpu, cpu):
        assert g.dtype == torch.float32 and g.shape == (41, 3, SIZE, SIZE)
        assert (g.cpu() - c).abs().mean() < 0.1


def test_cuda_evaluation_close_to_cpu(tree):
    from dali_pixmix.evaluation.imagenet_p import run_imagenet_p
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CLASSES)).eval()
    kwargs = dict(perturbations="tilt,translate,gaussian_noise", batch_size=64, progress=False,
                  cache_dir=None)
    gpu_rows, gpu = run_imagenet_p(model, CLASSES, tree, DistInfo(device=torch.device("cuda", 0)),
                                   amp=True, **kwargs)
    _, cpu = run_imagenet_p(model.cpu(), CLASSES, tree, DistInfo(), **kwargs)
    assert "amp-fp16,dali-nvdec" in gpu_rows[0].protocol
    for p in ("tilt", "translate", "gaussian_noise"):
        assert gpu[p]["videos"] == cpu[p]["videos"] == 6
        # Decoder colour conversion and AMP differ slightly; flips of a 6-video set stay close.
        assert abs(gpu[p]["flip_prob"] - cpu[p]["flip_prob"]) < 0.1, p
    assert sorted(n for n, _ in gpu["tilt"]["skipped"]) == [f"{CLASSES[0]}/broken",
                                                            f"{CLASSES[1]}/short"]


def test_reader_pins_the_callers_gpu_and_normalises_without_host_waits(tree):
    from dali_pixmix.evaluation.video import DaliVideoDecoder, normalize_frames

    current = torch.device("cuda", torch.cuda.current_device())
    entries = [e for e in list_videos(tree / "tilt", CLASSES) if e.name.endswith("/v0")][:1]
    reader = VideoReader(entries, 31, "cuda", backend="dali")
    assert reader.device == current and DaliVideoDecoder("cuda", 1).device == current
    (clip,) = list(VideoReader(entries, 31, "cuda", normalize=False, backend="dali"))
    frames = clip.frames  # decoding has finished: no other thread touches CUDA below
    normalize_frames(frames)  # the first call makes the per-device constants
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = normalize_frames(frames)  # later calls: no blocking copy
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.is_cuda and out.shape == (31, 3, SIZE, SIZE)
