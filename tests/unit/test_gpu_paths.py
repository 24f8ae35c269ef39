"""GPU-path settings checked where a CPU allows: decoder arguments, model wrapping order, the
video path's constants and device. (Their behaviour on a GPU is tested in tests/gpu.)"""
import datetime

import pytest
import torch
import torch.distributed as dist

from dali_pixmix.config import Config
from dali_pixmix.data.decoding import HW_DECODER_LOAD, TRAIN_DECODER_PADDING, decoder_args
from dali_pixmix.data.normalise import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_mean_std,
    normalise_imagenet,
)
from dali_pixmix.distributed import DistInfo
from dali_pixmix.evaluation import video
from dali_pixmix.mixing import fvis
from dali_pixmix.pipelines import graphs
from dali_pixmix.pipelines.graphs import random_crop_decoder_args
from dali_pixmix.training.setup import build_training_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("schema", ["decoders__Image", "decoders__ImageRandomCrop"])
def test_gpu_decoder_arguments_exist_in_dali(schema):
    """A misspelt argument would only fail on a GPU node, at pipeline build."""
    from nvidia.dali import backend

    spec = backend.GetSchema(schema)
    crop = [random_crop_decoder_args(True)] if schema == "decoders__ImageRandomCrop" else []
    for gpu_args in [decoder_args(True), decoder_args(True, TRAIN_DECODER_PADDING, roi=True),
                     *crop]:
        assert gpu_args["device"] == "mixed" and gpu_args["hw_decoder_load"] == 0.99
        for name in set(gpu_args) - {"device"}:
            assert spec.HasArgument(name), f"{schema} has no argument {name}"
    assert decoder_args(False) == {"device": "cpu", "adjust_orientation": False}


def decoder_specs(graph, **graph_args) -> dict:
    """{decoder op: {argument: value as DALI prints it}} of `graph` traced with its GPU
    arguments. The pipeline is serialised, never built (building a `mixed` op needs a GPU),
    which traces the graph with every argument the decoders would get on a GPU node."""
    from nvidia.dali import pipeline_def

    pipe = pipeline_def(graph, batch_size=2, num_threads=1, device_id=None)(**graph_args)
    pipe.serialize()
    specs = {}
    for op in pipe._ops:
        lines = str(op.spec).splitlines()
        if "decoders__" not in lines[0]:
            continue
        arguments = lines[lines.index("  Arguments:") + 1:]
        specs[lines[0].split("decoders__")[1].rstrip(":")] = dict(
            line.strip().split(": ", 1) for line in arguments if ": " in line)
    return specs


def test_each_graph_gives_its_gpu_decoder_the_right_arguments(tmp_path):
    """Training decodes a region of interest on the GPU without fancy upsampling (nvJPEG < 13.2
    refuses the two together and DALI would decode on the CPU) and with the configured
    hw_decoder_load; evaluation and the mixing bank decode whole pictures with it (CPU parity).
    """
    from dali_pixmix.mixing import bank

    files = [str(tmp_path / "a.jpg")]
    common = dict(crop=32, gpu=True, stage=None, auto_augment=False, dtype="float32",
                  layout="CHW")
    reader = dict(file_root=None, file_list=None, files=files, labels=[0], shard_id=0,
                  num_shards=1, shuffle=True)
    training = [decoder_specs(graphs._train_graph, reader_args=reader, hw_decoder_load=0.7,
                              **common),
                decoder_specs(graphs._stream_graph, source=lambda info: None,
                              hw_decoder_load=0.7, **common)]
    for specs in training:
        assert list(specs) == ["ImageRandomCrop"]
        args = specs["ImageRandomCrop"]
        assert (args["device"], args["jpeg_fancy_upsampling"]) == ("mixed", "False")
        assert float(args["hw_decoder_load"]) == 0.7
        assert int(args["device_memory_padding"]) == TRAIN_DECODER_PADDING[
            "device_memory_padding"]
    full = [decoder_specs(graphs._eval_graph, reader_args={**reader, "shuffle": False},
                          resize=36, crop=32, no_resize=False, gpu=True, dtype="float32",
                          layout="CHW"),
            decoder_specs(bank._bank_graph, files=files, size=32, gpu=True)]
    for specs in full:
        args = specs["Image"]
        assert (args["device"], args["jpeg_fancy_upsampling"]) == ("mixed", "True")
        assert float(args["hw_decoder_load"]) == HW_DECODER_LOAD
    cpu = decoder_specs(graphs._train_graph, reader_args=reader, **{**common, "gpu": False})
    assert cpu["ImageRandomCrop"]["device"] == "cpu"
    assert "jpeg_fancy_upsampling" not in cpu["ImageRandomCrop"]  # the CPU decoder's default


def test_training_padding_fits_eight_ranks():
    """Per pipeline with 4 decoder threads: one device and two pinned host buffers each."""
    device = 4 * TRAIN_DECODER_PADDING["device_memory_padding"]
    host = 4 * 2 * TRAIN_DECODER_PADDING["host_memory_padding"]
    assert device <= 256 << 20 and host <= 256 << 20
    assert "device_memory_padding" not in decoder_args(True)  # evaluation: DALI's defaults


def test_ddp_wraps_the_module_and_compile_wraps_ddp(tmp_path):
    """Compile outside DDP keeps DDP's bucketed all-reduce overlapping the backward pass."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=60))
    try:
        cfg = Config()
        cfg.model.arch, cfg.model.compile, cfg.model.channels_last = "resnet18", True, "false"
        model, raw = build_training_model(cfg, ["a", "b"], DistInfo(world_size=2))
    finally:
        dist.destroy_process_group()
    assert isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(model._orig_mod, torch.nn.parallel.DistributedDataParallel)
    assert model._orig_mod.module is raw and not hasattr(raw, "_orig_mod")
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in raw.state_dict())


def test_frame_normalisation_constants_are_made_once():
    frames = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    out = video.normalize_frames(frames)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(out, (frames.permute(0, 3, 1, 2).float() - mean) / std)
    first = imagenet_mean_std(torch.device("cpu"), torch.float32, 255.0)
    assert all(a is b for a, b in zip(first, imagenet_mean_std(torch.device("cpu"),
                                                               torch.float32, 255.0)))


def test_generated_and_fvis_pictures_use_the_loaders_normalisation():
    rgb = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(fvis.normalise(rgb), (rgb - mean) / std)
    assert normalise_imagenet(rgb).dtype == torch.float32


def test_constants_first_made_under_inference_mode_still_serve_autograd():
    imagenet_mean_std.cache_clear()
    with torch.inference_mode():
        normalise_imagenet(torch.rand(1, 3, 2, 2))  # an evaluation makes them first
    rgb = torch.rand(1, 3, 2, 2, requires_grad=True)
    normalise_imagenet(rgb).sum().backward()  # FVis renders through the same constants
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb.grad, (1 / std).expand(1, 3, 2, 2))


def test_video_devices_are_resolved_when_built():
    assert video.resolve_device("cpu") == torch.device("cpu")
    assert video.resolve_device(torch.device("cuda", 3)) == torch.device("cuda", 3)
    reader = video.VideoReader([], 31, "cpu", backend="pyav")
    assert reader.device == torch.device("cpu")
    assert video.DaliVideoDecoder("cpu", 2).device == torch.device("cpu")
