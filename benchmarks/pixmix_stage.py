#!/usr/bin/env python3
"""PixMix stage throughput: batched torch ``pixmix`` vs the per-image PIL oracle, same images.

Both sides PixMix the same 224 px uint8 crops with the same mixing pictures and settings
(ImageNet recipe by default: k=4, beta=4, severity 1, all ops). The batched side runs on the
chosen device (CUDA when available: CUDA events, warm-up, synchronised; else CPU with
``torch.set_num_threads(n)``, i.e. n single-threaded host workers in ``pixmix``); the oracle
(``dali_pixmix.reference.pixmix_pil``) runs in n processes (in-process for n = 1). Rounds
alternate batched / oracle and the median of each is reported with the ratio. For n = 1 the
CPU-time ratio is printed too, which is robust to other load on a shared machine.

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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_thp:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # read once, when torch loads
    import numpy as np
    import torch
    from tqdm import tqdm

    from dali_pixmix.augment.pixmix import pixmix
    from dali_pixmix.check.fixtures import picture_pool
    from dali_pixmix.check.throughput import time_calls

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

    pool_images, pool_mixing = picture_pool(args.size, 16, 8, args.seed)
    rng = np.random.default_rng(args.seed)
    batch = torch.from_numpy(pool_images[rng.integers(16, size=batch_size)]).to(args.device)
    mixing = torch.from_numpy(pool_mixing[rng.integers(8, size=batch_size)]).to(args.device)
    # A host generator, as the training stage uses: a CUDA one would make every call wait for
    # the device-to-host copy of the drawn plan.
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(2):  # warm-up: allocator, kernels, CUDA context
        pixmix(batch, mixing, generator=gen, **settings)

    pool = None
    if args.threads > 1:
        pool = mp.get_context("fork").Pool(args.threads, _init_worker,
                                           (pool_images, pool_mixing, settings))
    else:
        _init_worker(pool_images, pool_mixing, settings)
    results = {"batched": [], "oracle": [], "batched_cpu": [], "oracle_cpu": []}
    try:
        time_oracle(pool, min(8, args.oracle_images), args.threads, args.seed)  # warm-up
        for r in tqdm(range(args.rounds), desc="rounds", leave=False):
            wall, cpu = time_calls(lambda: pixmix(batch, mixing, generator=gen, **settings),
                                   batches, batch.device)
            results["batched"].append(batches * batch_size / wall)
            if cpu:
                results["batched_cpu"].append(batches * batch_size / cpu)
            wall, cpu = time_oracle(pool, args.oracle_images, args.threads, args.seed + r)
            results["oracle"].append(args.oracle_images / wall)
            if cpu:
                results["oracle_cpu"].append(args.oracle_images / cpu)
    finally:
        if pool is not None:
            pool.close()
    return report(args, batch_size, results, on_cuda, torch)


def report(args, batch_size, results, on_cuda, torch) -> int:
    st = statistics
    batched, oracle = st.median(results["batched"]), st.median(results["oracle"])
    where = torch.cuda.get_device_name() if on_cuda else f"CPU, {args.threads} thread(s)"
    print(f"device: {where}; oracle: PIL, {args.threads} process(es); {args.size} px, "
          f"batch {batch_size}; k={args.k} beta={args.beta} severity={args.severity} "
          f"all_ops={not args.no_all_ops}; THP_MEM_ALLOC_ENABLE="
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    print(f"batched pixmix : {batched:10.1f} images/s  (median of {args.rounds} rounds)")
    print(f"PIL oracle     : {oracle:10.1f} images/s")
    summary = {"device": where, "batch_size": batch_size, "threads": args.threads,
               "batched_images_per_s": batched, "oracle_images_per_s": oracle,
               "ratio_wall": batched / oracle}
    line = f"ratio batched / oracle (wall clock): {batched / oracle:.2f}x"
    if results["batched_cpu"] and results["oracle_cpu"]:
        cpu_ratio = st.median(results["batched_cpu"]) / st.median(results["oracle_cpu"])
        summary["ratio_cpu_time"] = cpu_ratio
        line += f"; per CPU second: {cpu_ratio:.2f}x"
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
