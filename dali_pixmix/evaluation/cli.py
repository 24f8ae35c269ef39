"""Shared command-line plumbing of the eval/*.py scripts (thin entry points).

Common flags: --checkpoint, --arch, --out, --batch-size (GLOBAL, as in the training config),
--resize/--crop (the checkpoint's data.val_resize/val_crop, else 256/224), --num-threads,
--device, --calibration-bin-size, --name (the row of table9.md), --no-header-check.
Flags that are also training config keys carry the same name (`--num-threads` = data.num_threads,
`--calibration-bin-size` = eval.calibration_bin_size). Under torchrun every rank runs the same
command and evaluates its shard; rank 0 writes `<out>/results/<task>.json|csv`,
`<out>/table9.md` and `<out>/plots/*.png`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from dali_pixmix.cli_help import DefaultsHelpFormatter
from dali_pixmix.evaluation.report import (
    Row,
    check_one_model,
    read_results,
    read_rows,
    summary_value,
    write_report,
    write_rows,
)

if TYPE_CHECKING:  # imported where used: `--help` answers before torch and DALI are loaded
    from dali_pixmix.evaluation.runner import Evaluator


def common_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="dali-pixmix checkpoint or torchvision state_dict (.pt/.pth)")
    p.add_argument("--arch", default=None,
                   help="torchvision architecture (default: from the checkpoint, else resnet50)")
    p.add_argument("--out", required=True, help="output folder (results, cache, plots)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="GLOBAL batch: images per forward pass summed over all ranks (divided by "
                        "the world size, which must divide it), as in the training config")
    p.add_argument("--resize", type=int, default=None,
                   help="shorter side before the centre crop (default: the checkpoint's "
                        "data.val_resize, else 256)")
    p.add_argument("--crop", type=int, default=None,
                   help="centre crop size (default: the checkpoint's data.val_crop, else 224)")
    p.add_argument("--num-threads", type=int, default=2,
                   help="DALI CPU threads per rank (the training config's data.num_threads)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--calibration-bin-size", type=int, default=100,
                   help="examples per adaptive bin of the RMS calibration error (papers: 100)")
    p.add_argument("--name", default="this model", help="row name of the model in table9.md")
    p.add_argument("--no-header-check", action="store_true",
                   help="do not read every image header before DALI does (saves under 0.1 ms "
                        "an image; a file DALI cannot parse may then crash it)")
    return p


def add_corruption_args(parser: argparse.ArgumentParser) -> None:
    """--protocol and --corruptions, shared by ImageNet-C and ImageNet-C-bar."""
    parser.add_argument("--protocol", default="pixmix", choices=("pixmix", "unresized"),
                        help="pixmix: Resize+CenterCrop the 224 px images (PixMix/AugMix "
                             "reference); unresized: feed them as they are")
    parser.add_argument("--corruptions", nargs="+", default=None,
                        help="evaluate only these corruption folders (default: all present)")


def evaluator_from_args(args: argparse.Namespace, resizes: bool = True) -> Evaluator:
    """The evaluator of the command's checkpoint (--resize/--crop not given are the
    checkpoint's; `resizes=False` for a task that feeds pictures as they are), after the checks
    that need no inference: the flags, a writable --out (not a surprise after hours of it) and
    --out's results being this checkpoint's (`report.check_one_model`)."""
    from dali_pixmix.evaluation.runner import Evaluator
    from dali_pixmix.oserrors import check_writable

    given = (args.batch_size, args.resize, args.crop, args.num_threads)
    if min(v for v in given if v is not None) < 1:
        raise ValueError(f"--batch-size, --resize, --crop and --num-threads must be positive, "
                         f"got {args.batch_size}, {args.resize}, {args.crop}, {args.num_threads}")
    check_writable(args.out, "--out")
    ev = Evaluator.from_checkpoint(args.checkpoint, args.out, arch=args.arch,
                                   device=args.device, batch_size=args.batch_size,
                                   resize=args.resize, crop=args.crop,
                                   num_threads=args.num_threads,
                                   check_headers=not args.no_header_check, resizes=resizes)
    if ev.crop > ev.resize:
        raise ValueError(f"--crop {ev.crop} is larger than --resize {ev.resize}: the centre "
                         "crop must fit in the resized picture")
    # before any inference: this folder's results must be this checkpoint's
    check_one_model(read_results(args.out), args.out, ev.weights, ev.checkpoint)
    return ev


def clean_error_from(out: str | Path) -> Optional[float]:
    """The clean top-1 error (fraction) of an earlier clean run in the same output folder."""
    path = Path(out) / "results" / "clean.json"
    hit = summary_value(read_rows(path), "clean", "top1_error") if path.is_file() else None
    return None if hit is None else hit.value / 100


def finish(ev: Evaluator, task: str, rows: Sequence[Row], name: str,
           headline: Sequence[str]) -> None:
    """Rank 0: write the task's rows, refresh the report, print a one-line summary."""
    if not ev.dist.is_main:
        return
    paths = write_rows(list(rows), ev.out / "results", task, ev.model_fields())
    table = write_report(ev.out, name, num_classes=len(ev.classes))
    shown = [f"{r.dataset}/{r.variant or '-'} {r.metric}={r.value:.2f}" for r in rows
             if r.metric in headline and r.severity is None and r.dataset != "" and
             (r.task != "ood" or r.dataset == "mean")]
    print(f"{task}: " + "; ".join(shown) + f" (percent) -> {paths[0]}, {table}")


def parse_named_paths(items: Sequence[str]) -> dict:
    """['textures=/data/dtd', ...] -> {'textures': '/data/dtd', ...}."""
    sets = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--ood expects NAME=PATH, got '{item}'")
        if name in sets:
            raise ValueError(f"--ood names two sets '{name}' ({sets[name]} and {path}); give "
                             "each set its own name")
        sets[name] = path
    return sets


INTERRUPTED = ("interrupted (Ctrl-C): the cells already evaluated stay cached in the --out "
               "folder; the same command goes on from them")


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None,
            failures: tuple = (), interrupted: str = INTERRUPTED) -> int:
    """Call `main`; bad input becomes one `error: ...` line and exit status 2; a failing file
    system (full disk, unwritable --out), a DALI failure no file explains or one of the
    caller's `failures` (e.g. a training run that stopped), one line and exit status 1; Ctrl-C
    the line `interrupted` (what was kept) and exit status 130."""
    from dali_pixmix.data.checks import PipelineError
    from dali_pixmix.oserrors import os_error_line

    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (PipelineError, *failures) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 1
    finally:
        distributed = sys.modules.get("dali_pixmix.distributed")
        if distributed is not None:  # (never imported, e.g. by --help: no process group)
            distributed.cleanup()
