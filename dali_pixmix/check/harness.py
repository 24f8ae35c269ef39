"""Run one check in a child process, bounded in time, and turn whatever happens into a result.

A check is a function returning a dict of JSON values (`status` defaults to "pass"); it raises
`Skip` when the machine lacks what it needs, `Failed` with a one-line finding, and any other
exception when it breaks. The child is forked from a parent that has imported torch but never
touched CUDA nor run a torch operation (a CUDA context or an OpenMP thread pool does not survive
a fork), so each child starts quickly and creates its own; it leads its own process group, so a
timeout ends it together with any helpers it started (DDP ranks). Its output goes to a
per-check log file.
"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

Result = Dict[str, Any]


class Skip(Exception):
    """The machine lacks what the check needs; the message says what."""


class Failed(Exception):
    """The check ran and found a fault; the message is the whole one-line detail."""


def first_line(err: BaseException, limit: int = 240) -> str:
    """`Type: first non-empty line of the message`, shortened to `limit` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def require(module: str, what: str, cuda: bool = False):
    """Import `module` or raise `Skip("<what> not importable ...")`; on a CUDA machine
    (`cuda`), where the GPU path needs it, `Failed` with the exact import error instead."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if cuda:
            raise Failed(f"{what} not importable on this CUDA machine "
                         f"({first_line(err, 400)})") from err
        raise Skip(f"{what} not importable ({first_line(err)})") from err


def require_cuda(what: str = "this check") -> None:
    import torch

    if not torch.cuda.is_available():
        raise Skip(f"no CUDA device: {what} needs a GPU")


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _child(func: Callable[..., Result], kwargs: dict, log_path: Path, result_path: Path,
           verbose: bool) -> None:
    os.setsid()  # own process group: the parent can end this check and its helpers at once
    if not verbose:  # both the C++ libraries' output (file descriptors) and Python's
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = sys.stderr = open(log, "w", buffering=1, closefd=False)
    try:
        result = dict(func(**kwargs) or {})
        result.setdefault("status", "pass")
    except Skip as reason:
        result = {"status": "skip", "detail": str(reason)}
    except Failed as fault:
        result = {"status": "fail", "detail": str(fault)}
    except BaseException as err:  # noqa: BLE001 - every failure becomes a result line
        traceback.print_exc()
        result = {"status": "fail", "detail": first_line(err)}
    tmp = result_path.with_suffix(".partial")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: CUDA/DALI destructors cannot hang or crash it


def _end_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.join(10)


def _death(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"the check's process died of {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"the check's process died of signal {-exitcode}"
    return f"the check's process exited with status {exitcode} and no result"


def run_isolated(func: Callable[..., Result], kwargs: dict, *, timeout: float, log_path: Path,
                 verbose: bool = False) -> Result:
    """`func(**kwargs)` in a forked child with `timeout` seconds; adds `seconds` to the result
    (and `timed_out: True` when the limit stopped it)."""
    result_path = log_path.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    sys.stdout.flush()  # the child must not inherit (and later repeat) unwritten output
    sys.stderr.flush()
    with warnings.catch_warnings():  # Python 3.12 warns about fork in threaded programs
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = multiprocessing.get_context("fork").Process(
            target=_child, args=(func, kwargs, log_path, result_path, verbose))
        start = time.perf_counter()
        proc.start()
    try:
        proc.join(timeout)
    except KeyboardInterrupt:
        _end_group(proc)
        raise
    seconds = time.perf_counter() - start
    timed_out = proc.is_alive()
    _end_group(proc)  # also ends helpers the check left behind
    if timed_out:
        result = {"status": "fail", "detail": f"timed out after {timeout:.0f} s (stopped)",
                  "timed_out": True}
    elif result_path.is_file():
        result = json.loads(result_path.read_text())
        result_path.unlink()
    else:
        result = {"status": "fail", "detail": _death(proc.exitcode)}
    result["seconds"] = round(seconds, 1)
    return result
