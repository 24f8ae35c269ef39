"""Persistent pools of single-threaded host workers for PixMix on the CPU.

Why not torch's own threads: called from a thread other than the one that first used OpenMP
(e.g. DALI's python-function thread), every parallel torch op wakes sleeping OpenMP workers,
which costs more than many of PixMix's per-chunk ops; ``n`` single-threaded workers on disjoint
samples keep ``n`` cores busy without that hand-off.
"""
from __future__ import annotations

import os
import threading

import torch

_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def host_workers(n: int):
    """A persistent pool of ``n`` threads whose torch ops run single-threaded."""
    with _POOLS_LOCK:
        if n not in _POOLS:
            _POOLS[n] = _start_single_threaded_pool(n)
        return _POOLS[n]


def _start_single_threaded_pool(n: int):
    """``n`` started threads, each with torch set to one thread; torch's default for threads
    that start later is left as the caller's."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pixmix")
    ready = threading.Barrier(n + 1)
    callers_threads = torch.get_num_threads()

    def single_threaded():
        torch.get_num_threads()  # initialise this thread's torch threading first
        torch.set_num_threads(1)  # this thread only ... and torch's global default,
        ready.wait()

    for _ in range(n):  # n blocking tasks: the pool starts n threads
        pool.submit(single_threaded)
    ready.wait()
    torch.set_num_threads(callers_threads)  # ... restored here for other threads
    return pool


def _forget_pools_in_child() -> None:
    """A forked child (e.g. a DataLoader worker) has none of the parent's pool threads."""
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_in_child)
