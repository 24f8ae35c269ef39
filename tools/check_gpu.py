#!/usr/bin/env python3
"""Check this machine for dali-pixmix in one command: environment, GPU correctness, speed.

  python tools/check_gpu.py --out results/node_check          # time budget: about 6 minutes
  python tools/check_gpu.py --quick                           # about 2 minutes
  docker run --rm --gpus all --ipc=host IMAGE tools/check_gpu.py --quick

Prints the environment (with warnings for known-bad driver/CUDA/DALI combinations), then
pass/fail/skip for each functional check and images/s for each throughput measurement beside
its baseline and goal. Exit status 1 if a functional check fails, 3 if none failed but some
did not run or finish within the time budget (--budget). Without a GPU the CPU subset runs. See
docs/troubleshooting.md for what a failure means.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "dali_pixmix" / "__init__.py").is_file():  # this checkout's package first
    sys.path.insert(0, str(ROOT))

from dali_pixmix.check.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
