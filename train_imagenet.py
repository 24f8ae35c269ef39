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
"""
import argparse
import sys
import warnings

import yaml

from dali_pixmix.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--config", required=True,
                        help="YAML recipe, e.g. configs/imagenet_pixmix.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.02 (repeatable)")
    parser.add_argument("--resume", default="auto",
                        help="auto (newest valid checkpoint in train.output_dir), none (a new "
                             "run), or the path of a checkpoint")
    previous = parser.add_mutually_exclusive_group()
    previous.add_argument("--archive", dest="previous", action="store_const", const="archive",
                          default="refuse", help="a new run (--resume none or a checkpoint "
                          "from elsewhere) moves an earlier run in train.output_dir to "
                          "<train.output_dir>/archive/<time>/ (default: refuse to start)")
    previous.add_argument("--overwrite", dest="previous", action="store_const",
                          const="overwrite", help="like --archive, but deletes the earlier run")
    parser.add_argument("--resume-changed", action="store_true",
                        help="resume even though the recipe (optimizer, PixMix, schedule, seed, "
                             "...) differs from the checkpoint's; the differences are printed")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (recipe, extends: and --set applied, "
                             "every key) as YAML and exit without training")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as notes:  # e.g. a deprecated key
            warnings.simplefilter("always", FutureWarning)
            cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from dali_pixmix.data.checks import PipelineError
    from dali_pixmix.distributed import print_main
    from dali_pixmix.oserrors import os_error_line
    from dali_pixmix.training.loop import (  # heavy imports after the config check
        TrainingError,
        train,
    )

    try:
        result = train(cfg, resume=args.resume, previous=args.previous,
                       resume_changed=args.resume_changed)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (TrainingError, PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. the disk filled up while writing a checkpoint
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C (the first saves a checkpoint and stops)
        print(f"error: interrupted (Ctrl-C) without saving; the checkpoints in "
              f"{cfg.train.output_dir} are kept: `--resume auto` continues from the newest",
              file=sys.stderr)
        return 130
    print_main(f"{result['status']} at step {result['step']}; outputs in "
               f"{cfg.train.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
