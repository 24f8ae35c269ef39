#!/usr/bin/env python3
"""Images/s of the evaluation path (DALI decode + resize + crop, AMP, channels_last on GPU)
against a plain torchvision ImageFolder + DataLoader path, same images, same model, one run.

Without --data a small ImageNet-like tree of JPEGs is generated in a temporary folder. Each path
runs one untimed warm-up pass (pipeline build, worker start, cuDNN autotune), then one timed pass.
`--loader-only` times the input pipelines alone (decode + resize + crop + normalise).
Defaults are small so the run takes about a minute on 2 CPU cores; on a GPU node try
`--arch resnet50 --images 8192 --batch-size 256 --workers 8 --image-size 500`.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dali_pixmix.check.throughput import timed_pass  # noqa: E402
from dali_pixmix.classes import imagenet_wnids  # noqa: E402
from dali_pixmix.data.normalise import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from dali_pixmix.evaluation import Evaluator  # noqa: E402
from dali_pixmix.evaluation.datasets import class_tree  # noqa: E402
from dali_pixmix.models import build_model  # noqa: E402
from dali_pixmix.precision import autocast, eval_amp_dtype  # noqa: E402


def make_tree(root: Path, images: int, size: int, classes: int = 8) -> Path:
    rng = np.random.default_rng(0)
    wnids = imagenet_wnids()[:classes]
    for i in range(images):
        folder = root / wnids[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (size, size * 4 // 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.JPEG", quality=90)
    return root


def dali_loader_pass(ev, images, labels) -> int:
    """Decode + resize + crop + normalise only (no model): the evaluator's own loader."""
    return sum(int(batch.shape[0]) for batch, _ in ev.loader(images.files, labels))


def torchvision_pass(model, root, args, device) -> int:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.Resize(args.resize), T.CenterCrop(args.crop), T.ToTensor(),
                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    loader = torch.utils.data.DataLoader(ImageFolder(str(root), tf), batch_size=args.batch_size,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    gpu = device.type == "cuda"
    count = 0
    with torch.inference_mode():
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if gpu:
                images = images.to(memory_format=torch.channels_last)
            if model is not None:
                with autocast(device, eval_amp_dtype(device)):
                    model(images).float().argmax(1).cpu()
            count += images.shape[0]
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="class-folder tree to read (default: generate one)")
    p.add_argument("--images", type=int, default=192, help="images to generate")
    p.add_argument("--image-size", type=int, default=160, help="height of generated images")
    p.add_argument("--arch", default=None, help="default: resnet50 on GPU, resnet18 on CPU")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--resize", type=int, default=146)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--workers", type=int, default=2,
                   help="DALI CPU threads (ours) / DataLoader workers (baseline)")
    p.add_argument("--loader-only", action="store_true",
                   help="time the input pipelines alone (no model forward)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = Path(args.data) if args.data else make_tree(tmp / "data", args.images,
                                                           args.image_size)
        images = class_tree(root)
        gpu = torch.cuda.is_available()
        arch = args.arch or ("resnet50" if gpu else "resnet18")
        torch.save({"model": build_model(arch, 1000).state_dict(), "arch": arch,
                    "classes": list(imagenet_wnids())}, tmp / "model.pt")
        ev = Evaluator.from_checkpoint(tmp / "model.pt", tmp / "out", batch_size=args.batch_size,
                                       resize=args.resize, crop=args.crop,
                                       num_threads=args.workers, progress=False)
        labels = images.labels(ev.classes)
        if args.loader_only:
            ours = timed_pass(lambda: dali_loader_pass(ev, images, labels))
            base_model = None
        else:
            ours = timed_pass(lambda: len(ev.infer(images.files, labels)))
            base_model = ev.model  # same weights and memory format
        theirs = timed_pass(lambda: torchvision_pass(base_model, root, args, ev.dist.device))
    device = torch.cuda.get_device_name() if gpu else "cpu"
    what = "input pipeline only" if args.loader_only else arch
    print(f"eval throughput ({what}, {len(images.files)} images, batch {args.batch_size}, "
          f"{args.resize}->{args.crop}, {args.workers} workers, {device}): "
          f"dali-pixmix {ours:.0f} img/s, torchvision ImageFolder+DataLoader {theirs:.0f} img/s, "
          f"ratio {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
