#!/usr/bin/env python3
"""Train a Wide ResNet on CIFAR-10 / CIFAR-100 with PixMix on a DALI pipeline (the same trainer).

Examples:
  python train_cifar.py --config configs/cifar_demo.yaml
  python train_cifar.py --config configs/cifar10_pixmix.yaml --set data.root=/datasets/cifar \\
      --set pixmix.mixing_set=/datasets/fractals_and_fvis
  torchrun --nproc_per_node=2 train_cifar.py --config configs/cifar100_pixmix.yaml \\
      --set data.root=/datasets/cifar --set pixmix.mixing_set=/datasets/fractals_and_fvis
data.root holds cifar-10-batches-py/ or cifar-10-batches-bin/ (CIFAR-100: cifar-100-python/ or
cifar-100-binary/), as torchvision and the official archives extract them.
Exit codes: 0 finished or stopped cleanly (SIGTERM/SIGUSR1 preemption, a first Ctrl-C,
train.max_steps) with a checkpoint; 1 training failed (e.g. non-finite loss, a full disk); 2 bad
configuration or input; 130 a second Ctrl-C (stopped without saving).
"""
import sys

from dali_pixmix.training.cli import main as train_main


def main(argv=None) -> int:
    return train_main(__doc__, "train_cifar.py", argv)


if __name__ == "__main__":
    sys.exit(main())
