#!/usr/bin/env bash
# Container entry point: pass the arguments through, so the image runs any entry point.
#   <image> train_imagenet.py --config configs/demo.yaml     -> python train_imagenet.py ...
#   <image> eval/run_all.py --checkpoint ... --out ...        -> python eval/run_all.py ...
#   <image> torchrun --nproc_per_node=8 train_imagenet.py ... -> torchrun ...
#   <image> python -m pytest -q tests/gpu                     -> any command, unchanged
# `exec` replaces this shell, so SIGTERM/SIGUSR1 reach Python (via tini) and the training run
# can checkpoint before it exits.
set -euo pipefail

usage() {
    cat <<'USAGE'
dali-pixmix image. Give an entry point and its arguments, for example:
  train_imagenet.py --config configs/demo.yaml
  torchrun --nproc_per_node=8 train_imagenet.py --config configs/imagenet_pixmix.yaml --resume auto
  eval/run_all.py --help
  tools/build_mixing_bank.py --help
  tools/check_gpu.py --quick          (does this node work, and how fast?)
Mount data read-only under /data and an output folder at /outputs; run with --ipc=host
(or --shm-size=16g) so DALI and NCCL have enough shared memory.
USAGE
}

if [[ $# -eq 0 || "$1" == "--help" || "$1" == "-h" ]]; then
    usage
    exit 0
fi

if [[ "$1" == *.py ]]; then
    exec python "$@"
fi
exec "$@"
