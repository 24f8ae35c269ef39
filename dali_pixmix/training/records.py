"""Per-step values that stay on the device and reach the host one step late.

A training step must never make the host wait for the GPU: `float(loss)`, `.tolist()`, or a
flag built with `torch.tensor([...], device="cuda")` each block until every queued kernel has
run, after which the GPU idles while the host queues the next step. So each step leaves a
*record* on the device instead: its loss, and three flags summed over ranks by one small
all-reduce (NCCL enqueues it; the host does not wait): the loss is non-finite somewhere, a
rank asked to stop (SIGTERM/SIGUSR1), rank 0's timer asks for a checkpoint. The record (and,
for the debug log, the step's labels) is copied into a pinned host buffer with a non-blocking
copy, followed by a CUDA event. The host reads step s's record after queueing step s+1, once
step s's event has completed: the GPU always has a whole step queued, so this wait never
starves it. The host's own flags reach the device the same way (pinned buffer, non-blocking
copy). Reads of the buffers go through numpy views, after the event: no torch call reads a
tensor on the host in the step path (tests check this by inspection on CPU, and with
`torch.cuda.set_sync_debug_mode("error")` on GPU).

Each slot also holds the step's batch (the DALI images and labels; what torch makes from them,
e.g. mixed images, comes from torch's caching allocator, which orders reuse on its stream)
until the slot is read: DALI 2.4's dynamic executor hands batches
to torch as zero-copy DLPack views whose deleter returns the buffer to DALI's pool with no
ordering against torch's stream, and the host queues step s+1 before step s has run, so a batch
dropped with its loop variable could be overwritten by DALI's next batch while its step still
reads it (conv1 keeps its input for the backward pass). Popping a slot waits for its event
first, so a batch is released only after its step has completed on the device.

Records are read in step order, so the first non-finite one names the step where the loss
first became non-finite. Every rank reads the same summed flags at the same step, so all ranks
take the same decisions at the same step. On CPU the copies are plain copies and there are no
events.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional, Tuple

import torch

from dali_pixmix.distributed import all_reduce_sum

SLOTS = 2  # pinned buffers in rotation: the step being recorded and the one waiting to be read


@dataclass
class StepRecord:
    """What the host learns about a finished step."""
    step: int                 # global step (1-based: optimizer steps done after it)
    epoch: int                # 0-based epoch of the step
    epoch_step: int           # 1-based step inside the epoch
    loss: float               # this rank's loss
    nonfinite: bool           # the loss was non-finite on some rank
    stop: bool                # some rank asked to stop
    save: bool                # rank 0's timer asked for a checkpoint
    labels: Optional[List[int]] = None  # this rank's labels (debug log only)


class StepRecords:
    """Records of the steps not read yet, oldest first (at most `SLOTS`)."""

    def __init__(self, device: torch.device, batch_size: int, keep_labels: bool = False):
        cuda = device.type == "cuda"
        self.device, self.keep_labels = device, keep_labels
        self._values = [torch.zeros(4, dtype=torch.float64, pin_memory=cuda)
                        for _ in range(SLOTS)]  # loss, non-finite, stop, save
        self._flags = [torch.zeros(2, dtype=torch.float32, pin_memory=cuda)
                       for _ in range(SLOTS)]   # this rank's stop, save
        self._labels = [torch.zeros(batch_size, dtype=torch.int64, pin_memory=cuda)
                        for _ in range(SLOTS)] if keep_labels else None
        self._events = [torch.cuda.Event() for _ in range(SLOTS)] if cuda else None
        self._batches: List[tuple] = [() for _ in range(SLOTS)]  # kept until the slot is read
        # the host side reads and writes the buffers through these numpy views (no torch call)
        self._values_np = [t.numpy() for t in self._values]
        self._flags_np = [t.numpy() for t in self._flags]
        self._labels_np = None if self._labels is None else [t.numpy() for t in self._labels]
        self._pending: Deque[Tuple[int, tuple]] = deque()
        self._count = 0

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, loss: torch.Tensor, labels: torch.Tensor, *, stop: bool, save: bool,
             where: Tuple[int, int, int], batch: tuple = ()) -> None:
        """Record a step (`where` = (step, epoch, epoch_step)) without waiting for it;
        `batch` (the tensors the step reads) stays referenced until its record is popped."""
        if len(self._pending) == SLOTS:
            raise RuntimeError("read the oldest step record before recording another")
        slot = self._count % SLOTS
        self._count += 1
        self._flags_np[slot][:] = (float(stop), float(save))
        flags = self._flags[slot].to(self.device, non_blocking=True)
        bad = (~torch.isfinite(loss.detach())).reshape(1).float()
        agreed = all_reduce_sum(torch.cat([bad, flags]))  # every rank's flags, summed
        values = torch.cat([loss.detach().double().reshape(1), agreed.double()])
        self._values[slot].copy_(values, non_blocking=True)
        if self._labels is not None:
            self._labels[slot].copy_(labels, non_blocking=True)
        if self._events is not None:
            self._events[slot].record()
        self._batches[slot] = tuple(batch)
        self._pending.append((slot, where))

    def pop(self) -> StepRecord:
        """The oldest record; waits until its step has finished on the device."""
        slot, (step, epoch, epoch_step) = self._pending.popleft()
        if self._events is not None:
            self._events[slot].synchronize()  # its step is done; the next one is queued
        self._batches[slot] = ()  # only now may DALI reuse the batch's buffers
        loss, bad, stop, save = self._values_np[slot].tolist()
        labels = None if self._labels_np is None else self._labels_np[slot].tolist()
        return StepRecord(step, epoch, epoch_step, loss, bad > 0, stop > 0, save > 0, labels)
