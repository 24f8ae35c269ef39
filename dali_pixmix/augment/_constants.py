"""Cached per-device constant tensors that any CUDA stream may use.

PixMix runs on whatever stream is current: DALI's stream inside the pipeline, torch's default
stream elsewhere, and DALI does not promise one stream for every call. A constant cached on the
GPU is therefore built on one stream, read by kernels on others, and finally freed by the cache's
LRU eviction while those kernels may still be queued. ``stream_safe_cache`` guards both ends:

* an event recorded right after building, which every later user's stream waits on, so no
  stream reads the constant before the kernels that write it have run (waiting on an event that
  has already completed costs the GPU nothing);
* ``record_stream`` for every stream that uses it, so that once evicted, the caching allocator
  hands the memory to a new tensor only after the work queued on those streams has finished.

Constants are always built outside inference mode, so one first made for an evaluation can
still serve a computation that autograd records (FVis renders through the same normalisation).

Keeping the constants forever would be the simpler guard, but bilinear maps are a few MB each
and one exists per rotation angle and size, so the caches must be able to evict.
"""
from __future__ import annotations

import functools

import torch


def _tensors(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _ready_event(value):
    """An event recorded on the current stream after ``value`` was built (None off CUDA)."""
    device = _tensors(value)[0].device
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def stream_safe_cache(maxsize: int):
    """``functools.lru_cache`` for builders of a tensor (or tuple of tensors) on one device,
    safe for callers on any CUDA stream (see the module docstring)."""
    def decorate(build):
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args):
            with torch.inference_mode(False):  # a first call under inference_mode must not
                value = build(*args)           # make constants that autograd then refuses
            return value, _ready_event(value)

        @functools.wraps(build)
        def get(*args):
            value, ready = cached(*args)
            if ready is not None:
                stream = torch.cuda.current_stream(_tensors(value)[0].device)
                stream.wait_event(ready)
                for tensor in _tensors(value):
                    tensor.record_stream(stream)
            return value

        get.cache_clear = cached.cache_clear
        get.cache_info = cached.cache_info
        return get
    return decorate
