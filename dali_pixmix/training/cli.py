"""The command line of the training scripts (train_imagenet.py, train_cifar.py): one trainer,
one set of flags and exit codes; each script names the datasets it trains.

Exit codes: 0 finished or stopped cleanly (SIGTERM/SIGUSR1 preemption, a first Ctrl-C,
train.max_steps) with a checkpoint; 1 training failed (e.g. non-finite loss, a full disk); 2 bad
configuration or input (an image that cannot be decoded included: fix it, then rerun;
requeueing would fail again); 130 a second Ctrl-C (stopped without saving).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

import yaml

from dali_pixmix.config import load_config

# data.dataset -> the script that trains it
SCRIPTS = {"imagenet": "train_imagenet.py", "cifar10": "train_cifar.py",
           "cifar100": "train_cifar.py"}


def parse_args(doc: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags of a training script whose module docstring is `doc` (first line: the
    description; the rest: the epilog)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc.split("\n", 2)[2])
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


def check_script(cfg, script: str, config: str) -> None:
    """The recipe's data.dataset is one that `script` trains."""
    wanted = SCRIPTS[cfg.data.dataset]
    if wanted != script:
        raise ValueError(f"{config} trains data.dataset={cfg.data.dataset}: run it with "
                         f"{wanted} (this is {script})")


def main(doc: str, script: str, argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, load and check the recipe, train; the exit code (see the module)."""
    args = parse_args(doc, argv)
    try:
        with warnings.catch_warnings(record=True) as notes:  # e.g. a deprecated key
            warnings.simplefilter("always", FutureWarning)
            cfg = load_config(args.config, args.overrides)
        check_script(cfg, script, args.config)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from dali_pixmix.distributed import print_main
    from dali_pixmix.evaluation.cli import run_cli
    from dali_pixmix.training.loop import (  # heavy imports after the config check
        TrainingError,
        train,
    )

    def run(_argv) -> int:
        result = train(cfg, resume=args.resume, previous=args.previous,
                       resume_changed=args.resume_changed)
        print_main(f"{result['status']} at step {result['step']}; outputs in "
                   f"{cfg.train.output_dir}")
        return 0

    # a second Ctrl-C stops at once (the first saves a checkpoint and stops)
    return run_cli(run, failures=(TrainingError,), interrupted=(
        f"interrupted (Ctrl-C) without saving; the checkpoints in {cfg.train.output_dir} are "
        "kept: `--resume auto` continues from the newest"))
