"""The self-check's functional pieces on the CPU, with the real DALI CPU pipeline: the code that
a GPU node runs with device 0 is the same, so here it must at least work and judge correctly."""
import numpy as np
import pytest
import torch
from PIL import Image

from dali_pixmix.check import fixtures, functional
from dali_pixmix.check.harness import Failed
from dali_pixmix.check.settings import for_machine
from dali_pixmix.pipelines.stage import PixMixStage

pytestmark = pytest.mark.integration

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return for_machine(False, True, tmp_path_factory.mktemp("check"))


def test_every_jpeg_flavour_decodes_like_pil(settings):
    """The CPU side of the nvJPEG check: DALI's CPU decoder equals libjpeg-turbo via PIL."""
    files = fixtures.jpeg_variants(settings)
    assert len(files) == len(fixtures.JPEG_KINDS) * len(fixtures.JPEG_SIZES)
    assert {Image.open(f).mode for f in files} == {"RGB", "L", "CMYK"}
    for path, decoded in zip(files, functional.decode_with_dali(files, False, 1)):
        expected = np.asarray(Image.open(path).convert("RGB"))
        assert decoded.shape == expected.shape and np.array_equal(decoded, expected), path.name


def test_the_roi_probe_decodes_regions_and_fails_a_cpu_fallback(settings):
    """The training-decoder probe through nvImageCodec, run here with its CPU backend (what
    the GPU node excludes): every flavour's centre region decodes at half size. With only a
    GPU backend here, nothing decodes: exactly what a GPU node sees when nvJPEG hands ROI
    decodes to the CPU, and a baseline flavour among them fails the check, naming it."""
    files = fixtures.jpeg_variants(settings)
    decoded = functional.roi_decodes(files, fancy=False, backends=("CPU_ONLY",), device_id=None)
    assert sorted(decoded) == sorted(f.stem for f in files) and all(decoded.values())
    line = functional.gpu_roi_verdict(decoded, ["cmyk_203x301"])
    assert f"{len(files)} of {len(files)} decoded on the GPU" in line
    assert "the GPU refuses 1 of" in line
    refused = functional.roi_decodes(files, fancy=False, backends=("GPU_ONLY",), device_id=None)
    assert not any(refused.values())
    with pytest.raises(Failed, match="would be decoded on the CPU threads, not by nvJPEG: "
                                     "baseline_420_203x301, baseline_420_256x256"):
        functional.gpu_roi_verdict(refused, [])
    only_cmyk = {stem: not stem.startswith("cmyk") for stem in decoded}
    assert "CPU only: cmyk_203x301" in functional.gpu_roi_verdict(only_cmyk, [])  # reported


def test_the_lifetime_probe_compares_kept_and_cloned_batches():
    """The batch-lifetime probe's step loop on the CPU (the GPU node runs it on the training
    loader's zero-copy batches): the same gradients either way, one per step."""
    from dali_pixmix.check.compute import conv1_gradients

    def run(keep):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), torch.nn.Linear(4, 5))
        gen = torch.Generator().manual_seed(1)
        batches = [(torch.rand(2, 3, 8, 8, generator=gen), torch.tensor([0, 3]))
                   for _ in range(3)]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return conv1_gradients(model, optimizer, iter(batches), 3, keep, CPU)

    kept, cloned = run(True), run(False)
    assert len(kept) == 3 and all(torch.equal(a, b) for a, b in zip(kept, cloned))
    assert not torch.equal(kept[0], kept[2])  # the steps did train


def test_op_and_pixmix_comparisons_run_and_report(settings):
    images, mixing = map(torch.from_numpy, fixtures.picture_pool(32, 8, 8, seed=1))
    assert "ops on cpu = CPU" in functional.ops_agree(images, CPU)
    assert "traced PixMix of 8 samples" in functional.pixmix_agrees(images, mixing, CPU)


def test_geometric_samples_are_told_apart():
    plain = {"start": ["posterize", 3], "rounds": [{"partner": "mixing"}]}
    shifted = {"start": None, "rounds": [{"partner": ["translate_x", -7]}]}
    assert not functional._uses_geometric(plain) and functional._uses_geometric(shifted)


def test_checked_stage_runs_inside_the_pipeline_between_mode_switches(settings):
    modes = []
    stage = PixMixStage(fixtures.mixing_bank(settings, "cpu"), crop=settings.crop)
    report = functional.run_checked_stage(settings, stage, None, 3, set_mode=modes.append)
    assert report["calls"] >= 3 and report["device"] == "cpu" and "error" not in report
    assert modes[:4] == ["error", "default", "error", "default"]


class Synchronising:
    """A stage that fails the way torch does under set_sync_debug_mode("error")."""

    runs_in_torch = True  # the pipeline hands it the crops, as PixMix

    def __init__(self, crop):
        self.crop, self.seed = crop, 0

    def for_pipeline(self, seed, dtype, layout, start=0):
        return self

    def apply(self, batch):
        return batch

    def __call__(self, samples):
        raise RuntimeError("called a synchronizing CUDA operation\nmore text")


def test_a_synchronising_stage_is_reported_not_raised(settings):
    report = functional.run_checked_stage(settings, Synchronising(settings.crop), None, 2,
                                          set_mode=lambda mode: None)
    assert report["error"].startswith("RuntimeError: called a synchronizing CUDA operation")


def test_without_dali_the_stage_is_checked_on_direct_batches(settings):
    """The no-sync check's path for a machine without DALI: the stage's pipeline form on a
    uint8 batch, each call under the check (torch's switch replaced: no CUDA here)."""
    modes = []
    stage = PixMixStage(fixtures.mixing_bank(settings, "cpu"), crop=settings.crop)
    batch = torch.from_numpy(fixtures.picture_pool(settings.crop, 4, 1, seed=3)[0])
    report = functional.run_checked_batches(stage, batch, 3, set_mode=modes.append)
    assert report == {"device": "cpu", "calls": 3}
    assert modes == ["error", "default"] * 3


class SynchronisingApply(Synchronising):
    def apply(self, batch):
        raise RuntimeError("called a synchronizing CUDA operation\nmore text")


def test_a_synchronising_direct_call_is_reported_not_raised(settings):
    batch = torch.zeros((2, settings.crop, settings.crop, 3), dtype=torch.uint8)
    report = functional.run_checked_batches(SynchronisingApply(settings.crop), batch, 3,
                                            set_mode=lambda mode: None)
    assert report["error"].startswith("RuntimeError: called a synchronizing CUDA operation")
    assert "calls" not in report


def test_evaluation_comparison_runs_and_judges(settings):
    line = functional.compare_evaluation(settings, CPU, CPU)
    assert line.startswith("8 pictures: top-1 equal on 8 (0 near-tie flip(s) allowed); "
                           "normalised |cpu-cpu| mean 0.000")


def test_near_ties_are_the_close_calls():
    model = torch.nn.Flatten()  # the "logits" are the pictures themselves
    images = torch.tensor([[0.0, 1.0, 0.999], [0.0, 1.0, 0.5]])
    assert functional.near_ties(model, images, batch=1).tolist() == [True, False]


def test_user_tree_is_sampled_evenly_without_hidden_files(tmp_path):
    for c in ("a", "b", "c"):
        (tmp_path / c).mkdir()
        for i in range(5):
            (tmp_path / c / f"{i}.JPEG").write_bytes(b"")
        (tmp_path / c / "._0.JPEG").write_bytes(b"")
        (tmp_path / c / "notes.txt").write_text("x")
    files, labels = fixtures.sample_class_tree(tmp_path, 6)
    assert labels == [0, 0, 1, 1, 2, 2]
    assert [f.split("/")[-2:] for f in files][:2] == [["a", "0.JPEG"], ["a", "1.JPEG"]]
    with pytest.raises(FileNotFoundError, match="--data"):
        fixtures.sample_class_tree(tmp_path / "missing", 4)


def test_failed_is_its_own_message():
    with pytest.raises(Failed, match="^x$"):
        raise Failed("x")
