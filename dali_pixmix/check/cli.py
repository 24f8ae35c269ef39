"""`tools/check_gpu.py`: does this node work for dali-pixmix, and how fast is it?

Runs the environment report, the functional checks and the throughput measurements, each in
its own child process with a time limit, prints progress lines as it goes and a table at the
end, and writes `check_gpu.json` / `check_gpu.md` with `--out`. Exit status 1 when a functional
check fails, 2 on bad arguments, 3 when no check failed but some did not run (or finish) for
lack of time (a check not run is not a pass), 0 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# torch is imported here, in the parent, so that every forked check starts with it loaded.
# The parent itself must never touch CUDA nor run a torch operation: a forked child could not
# use CUDA then, and OpenMP's thread pool would hang it.
import torch  # noqa: F401
import torchvision  # noqa: F401

from dali_pixmix.check import compute, functional, throughput
from dali_pixmix.check.environment import advice, collect
from dali_pixmix.check.harness import run_isolated
from dali_pixmix.check.report import Report, console, environment_lines
from dali_pixmix.check.settings import Settings, for_machine
from dali_pixmix.oserrors import os_error_line

Item = Tuple[str, Callable]
FUNCTIONAL: List[Item] = [
    ("decode_libraries", functional.decode_libraries),
    ("nvjpeg_decode", functional.nvjpeg_decode),
    ("train_pipeline", functional.train_pipeline),
    ("stage_no_sync", functional.stage_no_sync),
    ("amp_channels_last", compute.amp_channels_last),
    ("batch_lifetime", compute.batch_lifetime),
    ("ddp_nccl", compute.ddp_nccl),
    ("video_decode", functional.video_decode),
    ("eval_gpu_vs_cpu", functional.eval_gpu_vs_cpu),
]
THROUGHPUT: List[Item] = [
    ("pixmix_stage", throughput.pixmix_stage),
    ("train_decode", throughput.train_decode),
    ("pipeline_pixmix", throughput.pipeline_pixmix),
    ("pipeline_cuda_graph", throughput.pipeline_cuda_graph),
    ("train_step", throughput.train_step),
    ("eval_infer", throughput.eval_infer),
    ("imagenet_p_video", throughput.imagenet_p_video),
]
THROUGHPUT_FIELDS = ("images_per_s", "baseline_images_per_s", "baseline", "ratio", "goal", "met")
MIN_SLOT_S = 10.0  # a check is not started with less time than this left in the budget


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    names = [n for n, _ in FUNCTIONAL + THROUGHPUT]
    p = argparse.ArgumentParser(
        prog="check_gpu.py", description=__doc__.split("\n\n")[0],
        epilog=f"check and measurement names: {', '.join(names)}")
    p.add_argument("--quick", action="store_true",
                   help="fewer images and steps: a time budget of about 2 minutes (default: "
                        "about 6)")
    p.add_argument("--out", metavar="DIR", help="write check_gpu.json, check_gpu.md and the "
                                                "per-check logs (logs/) here")
    p.add_argument("--data", metavar="DIR", help="a class-folder training tree to read (a few "
                                                 "pictures per class) instead of generated JPEGs")
    p.add_argument("--mixing", metavar="PATH", help="a mixing-set folder or .npy bank instead "
                                                    "of generated fractals")
    p.add_argument("--only", metavar="NAMES", help="comma-separated checks/measurements to run "
                                                   "(the others are reported as skipped)")
    p.add_argument("--functional-only", action="store_true", help="skip the throughput tier")
    p.add_argument("--threads", type=int, default=None,
                   help="DALI CPU threads (default: cores, at most 8)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="time for the whole run (default: 360, --quick 110, CPU 300)")
    p.add_argument("--pixmix-strategy", choices=("auto", "grouped", "dense"), default=None,
                   help="how the PixMix stage runs in the checks and the pipeline/training "
                        "measurements (pixmix.strategy; default auto: dense on a GPU); the "
                        "stage measurement times every strategy anyway")
    p.add_argument("--pixmix-cuda-graph", action="store_true", default=None,
                   help="replay the dense PixMix stage from a CUDA graph (pixmix.cuda_graph)")
    p.add_argument("--verbose", action="store_true",
                   help="show the checks' own output instead of logging it")
    args = p.parse_args(argv)
    args.only = _selection(p, args.only, names)
    if args.pixmix_cuda_graph and args.pixmix_strategy == "grouped":
        p.error("--pixmix-cuda-graph needs the dense strategy (or auto)")
    for path, what in ((args.data, "--data"), (args.mixing, "--mixing")):
        if path and not Path(path).exists():
            p.error(f"{what} {path} does not exist")
    return args


def _selection(parser, text: Optional[str], names: List[str]) -> Optional[List[str]]:
    if not text:
        return None
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"--only: unknown name(s) {unknown}; choose from {names}")
    return chosen


def progress(line: str) -> None:
    print(line, flush=True)


def environment_check() -> Dict:
    return {"environment": collect()}


def call_check(func: Callable, s: Settings) -> Dict:
    """In the child: apply the preset's torch thread count, then run the check. (Tiny CPU
    work with several OpenMP threads on a busy machine is many times slower than with one.)"""
    if s.torch_threads:
        torch.set_num_threads(s.torch_threads)
    return func(s=s)


def run_item(name: str, func: Callable, s: Settings, args, deadline: float,
             logs: Path, position: str) -> Dict:
    """One check in its child process, or the reason it was not started."""
    if args.only is not None and name not in args.only:
        return {"name": name, "status": "skip", "detail": "not selected (--only)"}
    left = deadline - time.monotonic()
    if left < MIN_SLOT_S:
        result = {"name": name, "status": "skip", "out_of_time": True,
                  "detail": f"not run: the time budget ({s.budget_s:.0f} s) is spent"}
        progress(f"{position} {name}: skip ({result['detail']})")
        return result
    limit = min(s.limit(name), left)
    progress(f"{position} {name}: running (limit {limit:.0f} s)")
    result = {"name": name, **run_isolated(call_check, {"func": func, "s": s}, timeout=limit,
                                           log_path=logs / f"{name}.log", verbose=args.verbose)}
    if result.pop("timed_out", False) and limit < s.limit(name):
        result.update(status="skip", out_of_time=True,
                      detail=f"not finished: the time budget ({s.budget_s:.0f} s) ran out; "
                             "raise --budget")
    progress(f"{position} {name}: {result['status']} ({result['seconds']:.1f} s) "
             f"{result.get('detail', '')}")
    return result


def run_tier(label: str, items: List[Item], s: Settings, args, deadline: float,
             logs: Path) -> List[Dict]:
    return [run_item(name, func, s, args, deadline, logs, f"[{label} {i}/{len(items)}]")
            for i, (name, func) in enumerate(items, 1)]


def throughput_row(result: Dict) -> Dict:
    """A throughput result with every schema field (None where nothing was measured)."""
    return {"name": result["name"], "status": result["status"],
            **{k: result.get(k) for k in THROUGHPUT_FIELDS},
            "detail": result.get("detail", ""), "seconds": result.get("seconds"),
            **({"out_of_time": True} if result.get("out_of_time") else {})}


def _settings_json(s: Settings) -> Dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(s).items()
            if k not in ("limits", "workdir")}


def check_machine(args, workdir: Path, logs: Path) -> Report:
    started, started_utc = time.monotonic(), datetime.datetime.now(datetime.timezone.utc)
    found = run_isolated(environment_check, {}, timeout=60, log_path=logs / "environment.log",
                         verbose=args.verbose)
    env = found.get("environment") or {"error": found.get("detail", "no result")}
    s = for_machine(bool(env.get("cuda_available")), args.quick, workdir, data=args.data,
                    mixing=args.mixing, threads=args.threads, budget_s=args.budget,
                    pixmix_strategy=args.pixmix_strategy,
                    pixmix_cuda_graph=args.pixmix_cuda_graph)
    report = Report(env, advice(env), settings=_settings_json(s))
    for line in environment_lines(env) + [f"{a['level']}: {a['text']}" for a in report.advice]:
        progress(f"  {line}")
    deadline = started + s.budget_s
    report.checks = run_tier("check", FUNCTIONAL, s, args, deadline, logs)
    if not args.functional_only:
        report.throughput = [throughput_row(r) for r in
                             run_tier("speed", THROUGHPUT, s, args, deadline, logs)]
    report.run = {"started": started_utc.strftime("%Y-%m-%d %H:%M UTC"),
                  "seconds": round(time.monotonic() - started, 1),
                  "command": " ".join(["tools/check_gpu.py", *map(shlex.quote, args.argv)])}
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="check_gpu_"))
    logs = Path(args.out) / "logs" if args.out else workdir / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # --out under a file, read-only, full: before any check runs
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"error: --out: {os_error_line(err)}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "default"
    progress(f"dali-pixmix machine check ({mode} settings); per-check logs in {logs}")
    try:
        report = check_machine(args, workdir, logs)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    progress(console(report))
    if args.out:
        written = report.write(Path(args.out))
        progress(f"wrote {', '.join(str(p) for p in written)}")
    if report.failed and not args.out:
        progress(f"logs of the failed checks kept in {logs}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if report.failed else (3 if report.out_of_time else 0)
