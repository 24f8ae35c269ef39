#!/usr/bin/env python3
"""Run every configured safety evaluation and write the Table-9 report.

Datasets come from flags, from a YAML file (--config) whose keys are the task names
(clean: <val folder>, imagenet_c, imagenet_cbar, imagenet_r, imagenet_p, ood: {name: path},
plus optional protocol, synthetic_ood, synthetic_count, seed, calibration_bin_size) and/or from
--data-root, where conventional sub-folders are found automatically (imagenet/val or val,
imagenet-c, imagenet-c-bar, imagenet-r, imagenet-p, ood/<name>; evaluation.registry). Flags
override the YAML, which overrides --data-root. Results: <out>/results/<task>.json|csv,
<out>/table9.md, <out>/plots/*.png.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

import yaml  # noqa: E402

from dali_pixmix.evaluation import cli, datasets  # noqa: E402
from dali_pixmix.evaluation.registry import (  # noqa: E402
    DATA_ROOT_NAMES,
    HEADLINES,
    TASKS,
    configured_tasks,
    discover,
    validate,
)

FLAG_KEYS = {"val": "clean", "imagenet_c": "imagenet_c", "imagenet_cbar": "imagenet_cbar",
             "imagenet_r": "imagenet_r", "imagenet_p": "imagenet_p"}


def read_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of task name -> dataset root")
    allowed = set(TASKS) | {"protocol", "synthetic_ood", "synthetic_count", "seed",
                            "calibration_bin_size"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return data


def build_config(args) -> dict:
    cfg = {"protocol": "pixmix", "synthetic_ood": True,
           "calibration_bin_size": args.calibration_bin_size, "seed": 0}
    if args.data_root:
        cfg.update(discover(args.data_root))
    if args.config:
        cfg.update(read_yaml(args.config))
    for flag, key in FLAG_KEYS.items():
        if getattr(args, flag):
            cfg[key] = getattr(args, flag)
    if args.ood:
        cfg["ood"] = {**(cfg.get("ood") or {}), **cli.parse_named_paths(args.ood)}
    if args.protocol:
        cfg["protocol"] = args.protocol
    if args.no_synthetic:
        cfg["synthetic_ood"] = False
    if args.synthetic_count is not None:
        cfg["synthetic_count"] = args.synthetic_count
    return cfg


def data_root_names() -> str:
    """'imagenet/val or val, imagenet-c or ImageNet-C, ..., ood/<name>': what --data-root
    finds."""
    names = [" or ".join(folders) for folders in DATA_ROOT_NAMES.values()]
    return ", ".join(names + ["ood/<name>"])


def main(argv=None) -> int:
    parser = cli.common_parser(__doc__)
    parser.add_argument("--config", help="YAML listing dataset roots per task")
    parser.add_argument("--data-root", help="folder holding the datasets under conventional names")
    for flag in FLAG_KEYS:
        parser.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None)
    parser.add_argument("--ood", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument("--protocol", choices=("pixmix", "unresized"), default=None,
                        help="ImageNet-C/C-bar preprocessing (default pixmix)")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--synthetic-count", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = build_config(args)
    tasks = configured_tasks(cfg)
    if not tasks and args.data_root:
        raise ValueError(f"--data-root {args.data_root} holds none of the dataset folders "
                         f"looked for ({data_root_names()}): rename or link them, or pass "
                         "--val/--imagenet-c/... or --config")
    if not tasks:
        raise ValueError("no dataset configured: pass --val/--imagenet-c/... , --config or "
                         "--data-root")
    with datasets.listed_once():  # the folders checked up front are not listed again
        validate(cfg, tasks)
        ev = cli.evaluator_from_args(args)
        start = time.time()
        for task in tasks:
            ev.log(f"== {task}")
            cli.finish(ev, task, TASKS[task](ev, cfg), args.name, HEADLINES.get(task, ()))
    ev.log(f"run_all: {len(tasks)} tasks ({', '.join(tasks)}) in {time.time() - start:.0f} s "
           f"-> {Path(args.out) / 'table9.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
