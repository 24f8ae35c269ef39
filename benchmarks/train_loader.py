#!/usr/bin/env python3
"""Training loader: what a pipeline rebuilt every epoch cost, and what a resume costs.

On the same data and settings, median of `--repeats`:
 (a) build: a training loader built until its first batch is ready, which a pipeline rebuilt
     every epoch paid at every epoch start (the loader is now built once per run);
 (b) epoch boundary: the first batch of the next epoch from the one loader (what an epoch
     start costs now);
 (c) resume: a loader made from the DALI state saved at batch k of an epoch, until its first
     batch (how a run resumes now);
 (d) replay: a loader built at the epoch start plus k batches decoded and dropped (what a
     resume at batch k cost when every epoch had its own pipeline).
On CUDA the timings synchronise the device, and the decoders' preallocation that each build
makes (pinned host and device memory) is printed. Defaults: the demo's settings on generated
data, a few seconds on two CPU cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.data.decoding import TRAIN_DECODER_PADDING  # noqa: E402
from dali_pixmix.data.synthetic import make_synthetic_imagenet  # noqa: E402
from dali_pixmix.distributed import DistInfo, pick_device  # noqa: E402
from dali_pixmix.mixing.bank import MixingBank  # noqa: E402
from dali_pixmix.pipelines.loaders import make_train_loader  # noqa: E402
from dali_pixmix.pipelines.stage import PixMixStage  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--data", help="training folder (class sub-folders); default: generated")
    p.add_argument("--images", type=int, default=400, help="generated training JPEGs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--num-threads", type=int, default=2, help="DALI CPU threads")
    p.add_argument("--resume-batch", type=int, default=None,
                   help="k, the batch of the epoch a resume starts at (default: half an epoch)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-pixmix", action="store_true", help="time the pipeline without PixMix")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return p.parse_args()


def timed(action, device):
    """(seconds, result) of `action()`, the device synchronised at the end."""
    start = time.perf_counter()
    result = action()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def first_batch(loader):
    next(iter(loader))
    return loader


def main():
    args = parse_args()
    device = pick_device(0, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else make_synthetic_imagenet(
            Path(tmp) / "data", num_classes=10, train_per_class=args.images // 10,
            val_per_class=0, progress=False) / "train"
        gen = torch.Generator().manual_seed(0)
        bank = MixingBank(torch.randint(0, 256, (16, args.crop + 32, args.crop + 32, 3),
                                        dtype=torch.uint8, generator=gen).to(device))

        def loader(**where):
            stage = None if args.no_pixmix else PixMixStage(bank, crop=args.crop)
            return make_train_loader(root=root, batch_size=args.batch_size,
                                     dist=DistInfo(device=device), crop=args.crop, stage=stage,
                                     num_threads=args.num_threads, **where)

        report(args, device, measure(args, device, loader))


def measure(args, device, loader):
    times = {"a": [], "b": [], "c": [], "d": []}
    for _ in range(args.repeats):
        seconds, one = timed(lambda: first_batch(loader()), device)
        times["a"].append(seconds)
        k = args.resume_batch if args.resume_batch is not None else len(one) // 2
        for _ in one:  # the rest of epoch 0
            pass
        batches = iter(one)
        times["b"].append(timed(lambda: next(batches), device)[0])
        while one.epoch_step < k:  # epoch 1 up to batch k
            next(batches)
        state = one.state()
        times["c"].append(timed(lambda: first_batch(loader(epoch=1, step=k, dali_state=state)),
                                device)[0])

        def replay():
            batches = iter(loader(epoch=1))
            for _ in range(k + 1):
                next(batches)
        times["d"].append(timed(replay, device)[0])
    return {key: statistics.median(values) for key, values in times.items()}, k, len(one)


def report(args, device, measured):
    t, k, steps = measured
    print(f"device {device}, batch {args.batch_size}, crop {args.crop}, {steps} batches per "
          f"epoch, PixMix {'off' if args.no_pixmix else 'on'}, median of {args.repeats}")
    rows = (("a", "build + first batch (paid every epoch by a per-epoch rebuild)"),
            ("b", "first batch of the next epoch, one loader per run"),
            ("c", f"resume at batch {k} from the saved DALI state"),
            ("d", f"resume at batch {k} by replay (build + {k} dropped batches)"))
    for key, what in rows:
        print(f"({key}) {what:<64} {t[key] * 1e3:8.1f} ms")
    print(f"a/b {t['a'] / t['b']:.1f}, d/c {t['d'] / t['c']:.1f}")
    if device.type == "cuda":
        threads = args.num_threads
        host = 2 * TRAIN_DECODER_PADDING["host_memory_padding"] * threads
        dev = TRAIN_DECODER_PADDING["device_memory_padding"] * threads
        print(f"nvJPEG preallocation per build: {host / 2**20:.0f} MiB pinned host + "
              f"{dev / 2**20:.0f} MiB device ({threads} threads), per rank")


if __name__ == "__main__":
    main()
