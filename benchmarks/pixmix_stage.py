#!/usr/bin/env python3
"""PixMix stage throughput: batched torch ``pixmix`` vs the per-image PIL oracle, same images.

Both sides PixMix the same 224 px uint8 crops with the same mixing pictures and settings
(ImageNet recipe by default: k=4, beta=4, severity 1, all ops). The batched side runs on the
chosen device (CUDA when available: CUDA events, warm-up, synchronised; else CPU with
``torch.set_num_threads(n)``) with one or both execution strategies (``--strategy``: grouped,
whose CPU path runs n single-threaded host workers, and dense, a fixed kernel sequence;
``--cuda-graph`` replays dense from a CUDA graph); its plans come from a CPU generator, as in
the DALI stage. The oracle (``dali_pixmix.augment.pil_oracle.pixmix_pil``) runs in n processes
(in-process for n = 1). Rounds alternate strategies and oracle and the median of each is
reported with the ratio. For n = 1 the CPU-time ratio is printed too, which is robust to other
load on a shared machine. Each strategy's torch ops per batch are counted once (one thread):
all dispatched ops (on CUDA those on GPU tensors; on CPU this includes the plan's host-side
bookkeeping, so the dense device sequence is also counted alone; a graph replay dispatches
only its copies), those on image-sized tensors, and the bytes they move, estimated by
``dali_pixmix.augment.op_log``. The dense device sequence's traffic is also given per image
sized for the plan (eager) and with the CUDA graph's padded capacities, with the memory
bandwidth it implies at the measured rate (to read a GPU figure against the card's limit).

By default the torch CPU allocator is asked for transparent huge pages (torch's
``THP_MEM_ALLOC_ENABLE=1``, set before torch is imported; ``--no-thp`` to compare): the batched
path allocates large temporaries whose page faults otherwise cost ~10%.
Defaults finish in well under two minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402 - argparse only, no torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--strategy", default="both", choices=["grouped", "dense", "both"])
    p.add_argument("--cuda-graph", action="store_true",
                   help="dense strategy on CUDA: replay from a CUDA graph")
    p.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 64 on CPU")
    p.add_argument("--size", type=int, default=224, help="crop side, px")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the batched side = oracle processes")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median)")
    p.add_argument("--oracle-images", type=int, default=128, help="images per oracle round")
    p.add_argument("--batches", type=int, default=None,
                   help="batches per batched round (default: 4 on CPU, 20 on CUDA)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--beta", type=float, default=4.0)
    p.add_argument("--severity", type=float, default=1.0)
    p.add_argument("--no-all-ops", action="store_true")
    p.add_argument("--no-thp", action="store_true", help="leave torch's CPU allocator default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- oracle side
_WORK = {}


def _init_worker(images, mixing, settings):
    from PIL import Image

    _WORK["images"] = [Image.fromarray(a) for a in images]
    _WORK["mixing"] = [Image.fromarray(a) for a in mixing]
    _WORK["settings"] = settings


def _oracle_chunk(args):
    import numpy as np

    from dali_pixmix.augment.pil_oracle import pixmix_pil

    indices, seed = args
    rng = np.random.default_rng(seed)
    images, mixing, s = _WORK["images"], _WORK["mixing"], _WORK["settings"]
    for i in indices:
        pixmix_pil(images[i % len(images)], mixing[(i * 7) % len(mixing)], rng, **s)
    return len(indices)


def time_oracle(pool, n_images: int, threads: int, seed: int):
    """(wall seconds, CPU seconds or None) to PixMix n_images with the PIL oracle."""
    chunks = [(list(range(w, n_images, threads)), seed + w) for w in range(threads)]
    t_cpu, t0 = time.process_time(), time.perf_counter()
    if pool is None:
        done = _oracle_chunk(chunks[0])
    else:
        done = sum(pool.map(_oracle_chunk, chunks))
    wall = time.perf_counter() - t0
    assert done == n_images
    return wall, (time.process_time() - t_cpu if pool is None else None)


# ----------------------------------------------------------------------------- batched side
def count_ops(torch, pixmix, batch, mixing, settings, gen) -> dict:
    """Torch ops one pixmix call dispatches, recorded on this thread (one host worker): all of
    them (on CUDA: those on GPU tensors), those on image-sized tensors, estimated bytes."""
    from dali_pixmix.augment.op_log import OpLog

    image = batch[0].numel() // 3  # one channel of one image
    cuda = batch.is_cuda
    with OpLog() as log:
        pixmix(batch, mixing, generator=gen, **{**settings, "host_workers": 0})  # this thread
    return {"kernels": len(log.kernels(cuda_only=cuda)),
            "image_sized_kernels": len(log.kernels(image, cuda_only=cuda)),
            "traffic_bytes": log.traffic(cuda_only=cuda)}


def dense_sequence(batch, mixing, settings) -> dict:
    """Kernels and op-log traffic per image of the dense strategy's device sequence alone
    (``dense.run``, without the plan's host-side work), for one plan: sized for the plan
    (eager) and with the CUDA graph's capacities."""
    from dali_pixmix.augment import ops as A
    from dali_pixmix.augment.pixmix import dense

    ops = A.ALL_OPS if settings["all_ops"] else A.OPS
    kernels, eager, graph = dense.traffic_per_image(batch, mixing, settings["k"],
                                                    settings["beta"], settings["severity"], ops)
    return {"device_sequence_kernels": kernels, "device_traffic_bytes_per_image": eager,
            "graph_traffic_bytes_per_image": graph}


def strategy_settings(args, on_cuda: bool) -> dict:
    """pixmix keyword arguments of each strategy to measure."""
    names = ["grouped", "dense"] if args.strategy == "both" else [args.strategy]
    return {name: {"strategy": name, "cuda_graph": on_cuda and name == "dense"
                   and args.cuda_graph} for name in names}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_thp:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read once, when torch loads
    import numpy as np
    import torch

    from dali_pixmix.augment.pixmix import pixmix
    from dali_pixmix.check.fixtures import picture_pool

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    on_cuda = args.device == "cuda"
    batch_size = args.batch_size or (256 if on_cuda else 64)
    batches = args.batches or (20 if on_cuda else 4)
    torch.set_num_threads(args.threads)
    settings = dict(k=args.k, beta=args.beta, severity=args.severity, all_ops=not args.no_all_ops)
    strategies = strategy_settings(args, on_cuda)

    pool_images, pool_mixing = picture_pool(args.size, 16, 8, args.seed)
    rng = np.random.default_rng(args.seed)
    batch = torch.from_numpy(pool_images[rng.integers(16, size=batch_size)]).to(args.device)
    mixing = torch.from_numpy(pool_mixing[rng.integers(8, size=batch_size)]).to(args.device)
    gen = torch.Generator().manual_seed(args.seed)  # host plans: no device synchronisation
    ops = {}
    for name, extra in strategies.items():
        for _ in range(2):  # warm-up: allocator, kernels, CUDA context, graph capture
            pixmix(batch, mixing, generator=gen, **settings, **extra)
        ops[name] = count_ops(torch, pixmix, batch, mixing, {**settings, **extra}, gen)
    if "dense" in ops:
        ops["dense"].update(dense_sequence(batch, mixing, settings))

    results = run_rounds(args, torch, pixmix, batch, mixing, settings, strategies, batches,
                         gen, (pool_images, pool_mixing))
    return report(args, batch_size, results, ops, on_cuda, torch)


def run_rounds(args, torch, pixmix, batch, mixing, settings, strategies, batches, gen,
               pools) -> dict:
    """Images/s (wall clock and per CPU second) of every strategy and of the oracle, round
    after round."""
    from tqdm import tqdm

    from dali_pixmix.check.throughput import time_calls

    pool = None
    if args.threads > 1:
        pool = mp.get_context("fork").Pool(args.threads, _init_worker, (*pools, settings))
    else:
        _init_worker(*pools, settings)
    results = {name: {"wall": [], "cpu": []} for name in [*strategies, "oracle"]}
    try:
        time_oracle(pool, min(8, args.oracle_images), args.threads, args.seed)  # warm-up
        for r in tqdm(range(args.rounds), desc="rounds", leave=False):
            for name, extra in strategies.items():
                wall, cpu = time_calls(
                    lambda: pixmix(batch, mixing, generator=gen, **settings, **extra), batches,
                    batch.device)
                record(results[name], batches * batch.shape[0], wall, cpu)
            wall, cpu = time_oracle(pool, args.oracle_images, args.threads, args.seed + r)
            record(results["oracle"], args.oracle_images, wall, cpu)
    finally:
        if pool is not None:
            pool.close()
    return results


def record(result: dict, images: int, wall: float, cpu) -> None:
    result["wall"].append(images / wall)
    if cpu:
        result["cpu"].append(images / cpu)


def dense_traffic_line(count: dict, rate: float, graph: bool) -> str:
    """The dense device sequence's op-log traffic per image, eager and with CUDA-graph
    capacities, and the bandwidth the timed variant needs at ``rate`` images/s."""
    eager, padded = (count[k] for k in ("device_traffic_bytes_per_image",
                                         "graph_traffic_bytes_per_image"))
    timed = padded if graph else eager
    return (f"device sequence traffic (op log): {eager / 1e6:.1f} MB/image eager, "
            f"{padded / 1e6:.1f} MB/image with CUDA-graph capacities; at {rate:,.0f} images/s "
            f"the {'graph' if graph else 'eager'} run moves {rate * timed / 1e9:,.1f} GB/s")


def report(args, batch_size, results, ops, on_cuda, torch) -> int:
    median = statistics.median
    where = torch.cuda.get_device_name() if on_cuda else f"CPU, {args.threads} thread(s)"
    print(f"device: {where}; oracle: PIL, {args.threads} process(es); {args.size} px, "
          f"batch {batch_size}; k={args.k} beta={args.beta} severity={args.severity} "
          f"all_ops={not args.no_all_ops}; THP_MEM_ALLOC_ENABLE="
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    oracle = median(results["oracle"]["wall"])
    summary = {"device": where, "batch_size": batch_size, "threads": args.threads,
               "oracle_images_per_s": oracle, "strategies": {}}
    for name, count in ops.items():
        rate = median(results[name]["wall"])
        entry = {"images_per_s": rate, "ratio_wall": rate / oracle, **count}
        line = (f"{name:8s} pixmix: {rate:10.1f} images/s (median of {args.rounds} rounds), "
                f"{rate / oracle:.2f}x the oracle")
        if results[name]["cpu"] and results["oracle"]["cpu"]:
            entry["ratio_cpu_time"] = median(results[name]["cpu"]) / median(
                results["oracle"]["cpu"])
            line += f" ({entry['ratio_cpu_time']:.2f}x per CPU second)"
        print(line)
        sequence = count.get("device_sequence_kernels")
        print(f"{'':8s} torch ops per batch: {count['kernels']}"
              + (f" (device sequence alone: {sequence})" if sequence else "")
              + f", on image-sized tensors: {count['image_sized_kernels']}; est. traffic "
              f"{count['traffic_bytes'] / batch_size / 1e6:.1f} MB/image")
        if sequence:
            print(f"{'':8s} {dense_traffic_line(count, rate, on_cuda and args.cuda_graph)}")
        summary["strategies"][name] = entry
    print(f"PIL oracle     : {oracle:10.1f} images/s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
