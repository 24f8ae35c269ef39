#!/usr/bin/env python3
"""Training throughput: synthetic in-memory batches vs. the DALI pipeline with and without PixMix.

Same model, batch, precision and optimizer step in one run; prints images/s per source and the
ratio to the synthetic baseline (the goal on a GPU is >= 0.9 with PixMix). Small CPU defaults
finish in about a minute; on a GPU use e.g.
  python benchmarks/train_throughput.py --arch resnet50 --crop 224 --batch 256 --steps 50 \\
      --data /data/imagenet/train --mixing /data/fractals_and_fvis --bank-cache bank.npy
Without --data/--mixing a small synthetic dataset and fractal set are generated in a temp folder.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from dali_pixmix.check.throughput import (  # noqa: E402
    endless,
    interleaved_steps,
    make_step,
    synthetic_batches,
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="per-process batch")
    p.add_argument("--steps", type=int, default=6, help="timed steps per source and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is kept")
    p.add_argument("--data", help="training folder (class sub-folders); default: generated")
    p.add_argument("--mixing", help="mixing set folder/list/.npy; default: generated fractals")
    p.add_argument("--bank-cache", help=".npy cache for the mixing bank")
    p.add_argument("--bank-size", type=int, default=None, help="stored bank side (default crop+32)")
    p.add_argument("--num-threads", type=int, default=2, help="DALI CPU threads")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    return p.parse_args()


def prepare_data(args, workdir: Path):
    from dali_pixmix.data.synthetic import make_synthetic_imagenet
    from dali_pixmix.mixing.fractals import make_fractals

    data = Path(args.data) if args.data else make_synthetic_imagenet(
        workdir / "data", num_classes=10, train_per_class=20, val_per_class=0,
        progress=False) / "train"
    mixing = Path(args.mixing) if args.mixing else workdir / "fractals"
    if not args.mixing:
        make_fractals(mixing, n=32, size=max(128, args.crop + 32), progress=False)
    return data, mixing


def build_sources(args, dist, data, mixing, classes, channels_last):
    """The three batch sources: synthetic tensors, DALI without and with PixMix."""
    from dali_pixmix.mixing.bank import load_or_build_bank
    from dali_pixmix.pipelines.loaders import make_train_loader
    from dali_pixmix.pipelines.stage import PixMixStage

    bank = load_or_build_bank(mixing, args.bank_cache, size=args.bank_size or args.crop + 32,
                              device=dist.device, num_threads=args.num_threads)
    sources = {"synthetic (in memory)": synthetic_batches(args.batch, args.crop, classes,
                                                           dist.device, channels_last)}
    for name, stage in (("DALI, no PixMix", None),
                        ("DALI + PixMix", PixMixStage(bank, crop=args.crop))):
        sources[name] = endless(make_train_loader(
            root=data, batch_size=args.batch, dist=dist, crop=args.crop, stage=stage,
            num_threads=args.num_threads, channels_last=channels_last))
    return sources


def main():
    args = parse_args()
    from dali_pixmix.config import Config
    from dali_pixmix.data.images import class_names
    from dali_pixmix.distributed import init_distributed
    from dali_pixmix.models import build_model
    from dali_pixmix.precision import precision_name
    from dali_pixmix.training.setup import resolve_amp, use_channels_last

    dist = init_distributed(args.device)
    device = dist.device
    cfg = Config()
    cfg.train.amp = args.amp
    amp_dtype = resolve_amp(cfg, device)
    channels_last = use_channels_last(cfg, device)
    with tempfile.TemporaryDirectory() as tmp:
        data, mixing = prepare_data(args, Path(tmp))
        classes = len(class_names(data))
        model = build_model(args.arch, classes).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        step = make_step(model, optimizer, amp_dtype, device)
        sources = build_sources(args, dist, data, mixing, classes, channels_last)
        results = interleaved_steps(step, sources, args.rounds, args.steps, args.warmup,
                                    device)
    base = results["synthetic (in memory)"]
    print(f"{args.arch}, batch {args.batch}, crop {args.crop}, {precision_name(amp_dtype)}, "
          f"device {device}")
    print(f"{'source':<24}{'images/s':>12}{'ratio':>8}")
    for name, value in results.items():
        print(f"{name:<24}{value:>12.1f}{value / base:>8.2f}")
    print(f"summary: DALI+PixMix reaches {results['DALI + PixMix'] / base:.2f} of the "
          "synthetic-data throughput")


if __name__ == "__main__":
    main()
