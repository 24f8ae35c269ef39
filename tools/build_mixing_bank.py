#!/usr/bin/env python3
"""Build a PixMix mixing bank: folders of pictures (any depth) and/or file lists -> one `.npy`.

The bank is uint8 [N, S, S, 3] (shorter side resized to S, centre crop S); training opens it as a
memory map instead of decoding the mixing set again. `<out>.json` records what it was built from
(sources, each picture's size and time, S): given as `pixmix.bank_cache` with the same mixing set,
training reuses the bank while that record holds and rebuilds it otherwise. Several sources are
concatenated in the order given (each folder in sorted path order); a file reached twice is kept
once.

Examples:
    python tools/build_mixing_bank.py data/fractals_and_fvis --out banks/fractals_256.npy
    python tools/build_mixing_bank.py mixing/fractals mixing/fvis --out banks/mixing_256.npy
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dali_pixmix.cli_help import DefaultsHelpFormatter  # noqa: E402
from dali_pixmix.distributed import pick_device  # noqa: E402
from dali_pixmix.evaluation.cli import run_cli  # noqa: E402
from dali_pixmix.mixing.bank import (  # noqa: E402
    MixingBank,
    bank_record,
    mixing_files,
    sources_label,
    write_record,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="source",
                        help="folder of mixing pictures, or a file list ('relative/path label' "
                        "per line); several are combined into one bank")
    parser.add_argument("--out", required=True, help="output .npy path")
    parser.add_argument("--size", type=int, default=256, help="side S of the stored pictures")
    parser.add_argument("--root", default=None, help="root for file-list paths "
                        "(default: the list's folder)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="decode on the GPU (nvJPEG) or the CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-threads", type=int, default=2,
                        help="DALI CPU threads (the training config's data.num_threads)")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> Tuple[MixingBank, dict]:
    """The bank and its record (`bank_record`), from one listing of the sources."""
    files = mixing_files(args.sources, args.root, "--root")
    bank = MixingBank.from_files(files, size=args.size, device=pick_device(0, args.device),
                                 batch_size=args.batch_size, num_threads=args.num_threads,
                                 source=sources_label(args.sources))
    return bank, bank_record(args.sources, files, args.size)


def main(argv=None) -> int:
    """Bad input: one error line and exit status 2; a DALI or file-system failure: 1."""
    return run_cli(build_and_save, argv, interrupted="interrupted (Ctrl-C): no bank was "
                   "written (it is written whole at the end); run the command again")


def build_and_save(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if not args.out.endswith(".npy"):
        raise ValueError(f"--out {args.out} must end with .npy")
    if args.size < 1 or args.batch_size < 1 or args.num_threads < 1:
        raise ValueError(f"--size, --batch-size and --num-threads must be positive, got "
                         f"{args.size}, {args.batch_size}, {args.num_threads}")
    bank, record = build(args)
    out = bank.save(args.out)
    # what it was built from: as pixmix.bank_cache, training reuses it while that still holds
    write_record(out, record)
    megabytes = out.stat().st_size / 2**20
    print(f"wrote {len(bank)} pictures of {bank.size}x{bank.size} px to {out} "
          f"({megabytes:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
