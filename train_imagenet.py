#!/usr/bin/env python3
"""Fine-tune an ImageNet classifier with PixMix on a DALI pipeline (single process or torchrun).

Examples:
  python train_imagenet.py --config configs/demo.yaml
  torchrun --nproc_per_node=8 train_imagenet.py --config configs/imagenet_pixmix.yaml \\
      --set data.train=/data/imagenet/train --set data.val=/data/imagenet/val \\
      --set pixmix.mixing_set=/data/fractals_and_fvis --set model.pretrained=/ckpt/resnet50.pth
Exit codes: 0 finished or stopped cleanly (SIGTERM/SIGUSR1 preemption, a first Ctrl-C,
train.max_steps) with a checkpoint; 1 training failed (e.g. non-finite loss, a full disk); 2 bad
configuration or input (an image that cannot be decoded included: fix it, then rerun;
requeueing would fail again); 130 a second Ctrl-C (stopped without saving).
CIFAR recipes (data.dataset cifar10 / cifar100) run with train_cifar.py.
"""
import sys

from dali_pixmix.training.cli import main as train_main


def main(argv=None) -> int:
    return train_main(__doc__, "train_imagenet.py", argv)


if __name__ == "__main__":
    sys.exit(main())
