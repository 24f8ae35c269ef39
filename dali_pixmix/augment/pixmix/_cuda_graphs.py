"""The dense PixMix kernels replayed from CUDA graphs, one graph per batch shape.

A ``GraphRunner`` owns static device buffers: the uint8 image table (whose first rows receive
each batch's images and mixing pictures) and the packed plan, both sized by the graph
capacities (``_dense_plan.capacities``). ``dense.run`` on them is captured once; a call then
copies its inputs in, launches the graph and copies the result out. The copy out matters: the
graph's output buffer is rewritten by the next replay, while DALI may still hold this batch.

Streams: everything is enqueued on the caller's current stream (DALI's inside the pipeline).
DALI does not promise the same stream for every call, so each call first makes its stream wait
for the previous call's work (an event) before it touches the static buffers.

Capture uses ``capture_error_mode="thread_local"`` so that CUDA calls that DALI's own threads
make meanwhile neither fail nor invalidate it. Runners live as long as the process (a graph's
memory pool must outlive any replay still in flight); past ``_MAX_RUNNERS`` batch shapes, new
shapes run eagerly.
"""
from __future__ import annotations

import threading

import torch

from dali_pixmix.augment.pixmix._dense_plan import Shape, buffer_size, pack

_MAX_RUNNERS = 8
_RUNNERS: dict = {}
_RUNNERS_LOCK = threading.Lock()


def graph_runner(run, device, shape: Shape, output=None):
    """The runner of ``run`` (``dense.run``) for this device, shape and output format (None
    once ``_MAX_RUNNERS`` exist)."""
    key = (torch.device(device), shape, output)
    with _RUNNERS_LOCK:
        if key not in _RUNNERS:
            if len(_RUNNERS) >= _MAX_RUNNERS:
                return None
            _RUNNERS[key] = GraphRunner(run, torch.device(device), shape, output)
        return _RUNNERS[key]


class GraphRunner:
    """``runner(images, mixing_pics, plan_values)``: ``run(table, buf, shape, output)`` by
    graph replay."""

    def __init__(self, run, device: torch.device, shape: Shape, output=None):
        self.run, self.device, self.shape, self.output = run, device, shape, output
        size = (shape.rows, shape.height, shape.width, 3)
        self.table = torch.empty(size, dtype=torch.uint8, device=device)
        self.buf = torch.empty(buffer_size(shape), dtype=torch.uint8, device=device)
        self.graph, self.result, self._done = None, None, None
        self._lock = threading.Lock()

    def __call__(self, images, mixing_pics, values: dict) -> torch.Tensor:
        host = pack(values, self.shape, pin=True)
        with self._lock, torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            if self._done is not None:
                stream.wait_event(self._done)  # the previous call's replay and copy out
            n = self.shape.batch
            self.table[:n].copy_(images)
            self.table[n:2 * n].copy_(mixing_pics)
            self.buf.copy_(host, non_blocking=True)
            if self.graph is None:
                self._capture(stream)
            self.graph.replay()
            out = self.result.clone()
            self._done = torch.cuda.Event()
            self._done.record(stream)
        return out

    def _capture(self, stream) -> None:
        """Warm up on a side stream (first-use initialisation must not happen during capture),
        then capture ``run`` on the static buffers."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            self.run(self.table, self.buf, self.shape, self.output)
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.result = self.run(self.table, self.buf, self.shape, self.output)
        self.graph = graph

