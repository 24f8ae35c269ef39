"""Checks of the training arithmetic: AMP with channels_last, DDP over NCCL, and the lifetime of
DALI's zero-copy batches.

The first two drive the project's model builder with plain torch code (no training loop), so
they test the GPU stack (cuDNN, autocast, GradScaler, NCCL) rather than one version of the
loop. `batch_lifetime` runs float32 steps of a compiled model on the training loader's batches
with the host one step ahead, as training does, and compares conv1's gradients with a run on
cloned batches: a batch DALI reused while its step still read it would change them.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import socket
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from dali_pixmix.check.harness import Failed, Skip, require, require_cuda
from dali_pixmix.check.settings import Settings

AMP_CLASSES = 10


# ----------------------------------------------------------------------------- d. AMP
def _fixed_batch(n: int, crop: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, crop, crop, generator=gen)
    labels = torch.randint(0, AMP_CLASSES, (n,), generator=gen)
    return images.to(device).contiguous(memory_format=torch.channels_last), labels.to(device)


def train_fixed_batch(arch: str, device: torch.device, amp_dtype: torch.dtype, steps: int,
                      batch: int, crop: int) -> Dict:
    """`steps` SGD steps under autocast on one fixed batch, channels_last; GradScaler for
    float16. Returns the losses, the skipped steps and what the forward pass produced."""
    from dali_pixmix.models import build_model
    from dali_pixmix.precision import autocast

    torch.manual_seed(0)
    model = build_model(arch, AMP_CLASSES).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    images, labels = _fixed_batch(batch, crop, device)
    losses, skipped, logits = [], 0, None
    for _ in range(steps):
        with autocast(device, amp_dtype):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(optimizer)
        scaler.update()
        skipped += int(scale is not None and scaler.get_scale() < scale)
        losses.append(loss.detach().float())
    weight = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return {"losses": torch.stack(losses).cpu().tolist(), "skipped": skipped,
            "logits_dtype": str(logits.dtype).replace("torch.", ""),
            "channels_last": weight.is_contiguous(memory_format=torch.channels_last),
            "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters())}


def judge_amp_run(name: str, run: Dict, amp_dtype: torch.dtype, steps: int) -> str:
    """One line for a finished run, or Failed: finite, falling loss, reduced-precision
    forward, channels_last weights, and most steps applied."""
    losses = run["losses"]
    window = max(1, steps // 4)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    problems = []
    if not run["finite"] or not all(math.isfinite(v) for v in losses):
        problems.append("non-finite loss or weights")
    if not last < first:
        problems.append(f"loss did not fall ({first:.3f} -> {last:.3f})")
    if run["logits_dtype"] != str(amp_dtype).replace("torch.", ""):
        problems.append(f"autocast produced {run['logits_dtype']} logits")
    if not run["channels_last"]:
        problems.append("weights are not channels_last")
    if run["skipped"] > steps // 2:  # the default initial scale overflows a few times
        problems.append(f"GradScaler skipped {run['skipped']} of {steps} steps")
    if problems:
        raise Failed(f"{name}: {'; '.join(problems)}")
    extra = f", {run['skipped']} step(s) skipped by GradScaler" if name.startswith("fp16") else ""
    return f"{name}: loss {first:.2f} -> {last:.2f}{extra}"


def _amp_modes(s: Settings) -> Tuple[List[Tuple[str, torch.dtype]], List[str]]:
    """(name, dtype) of the runs to make, and notes on the ones left out."""
    modes, notes = [("fp16+GradScaler", torch.float16)], []
    if not s.on_cuda or torch.cuda.is_bf16_supported():
        modes.insert(0, ("bf16", torch.bfloat16))
    else:
        notes.append("bf16 skipped: not supported by this GPU")
    return modes, notes


def amp_channels_last(s: Settings) -> Dict:
    """d. bf16, and fp16 with GradScaler, with channels_last: loss finite and falling."""
    device = torch.device("cuda", 0) if s.on_cuda else torch.device("cpu")
    torch.backends.cudnn.benchmark = s.on_cuda
    modes, notes = _amp_modes(s)
    lines = [judge_amp_run(name, train_fixed_batch(s.arch, device, dtype, s.amp_steps,
                                                   s.amp_batch, s.amp_crop), dtype, s.amp_steps)
             for name, dtype in modes]
    where = "" if s.on_cuda else "CPU subset: "
    return {"detail": f"{where}{s.arch}, channels_last, {s.amp_steps} steps on a fixed batch of "
                      f"{s.amp_batch} x {s.amp_crop} px; " + "; ".join(lines + notes)}


# ----------------------------------------------------------------------------- e. DDP
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_rank(rank: int, world: int, port: int, backend: str, out: str, arch: str,
             crop: int) -> None:
    """One spawned rank: all-reduce, then 3 DDP steps on rank-specific data; rank 0 writes
    what it saw to `out`."""
    import torch.distributed as dist

    from dali_pixmix.models import build_model

    cuda = backend == "nccl"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the cores
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=90))
    try:
        summed = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(summed)
        torch.manual_seed(0)
        model = build_model(arch, AMP_CLASSES).to(device)
        initial = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rank] if cuda else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        for _ in range(3):
            images = torch.randn(4, 3, crop, crop, generator=gen).to(device)
            labels = torch.randint(0, AMP_CLASSES, (4,), generator=gen).to(device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(ddp(images), labels).backward()
            optimizer.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        everyone = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(everyone, flat)
        spread = max(float((w - everyone[0]).abs().max()) for w in everyone)
        if rank == 0:
            Path(out).write_text(json.dumps({
                "all_reduce": summed.cpu().tolist(), "expected": world * (world + 1) / 2,
                "weight_spread": spread, "moved": float((flat - initial).abs().max())}))
    finally:
        dist.destroy_process_group()


def run_ddp(backend: str, world: int, s: Settings) -> Dict:
    """Spawn `world` ranks of `ddp_rank`; returns rank 0's findings."""
    import torch.multiprocessing as mp

    out = s.workdir / f"ddp_{backend}.json"
    out.unlink(missing_ok=True)
    arch = s.ddp_arch
    # NCCL ranks start fresh interpreters (CUDA cannot cross a fork); gloo ranks are forked
    # from this CUDA-free process, which saves re-importing torch.
    try:
        mp.start_processes(ddp_rank, args=(world, _free_port(), backend, str(out), arch,
                                           min(s.crop, 64)),
                           nprocs=world, start_method="spawn" if backend == "nccl" else "fork")
    except mp.ProcessRaisedException as err:  # its message ends with the rank's own error
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise Failed(f"{backend} rank {err.error_index} failed: {lines[-1].strip()}") from err
    except mp.ProcessExitedException as err:
        raise Failed(f"{backend} rank {err.error_index} died (exit code {err.exit_code}, "
                     f"signal {err.signal_name})") from err
    return json.loads(out.read_text())


def judge_ddp(found: Dict, backend: str, world: int) -> str:
    if any(v != found["expected"] for v in found["all_reduce"]):
        raise Failed(f"{backend} all-reduce over {world} rank(s) gave {found['all_reduce']}, "
                     f"expected {found['expected']:g}")
    if found["weight_spread"] != 0.0:
        raise Failed(f"after 3 DDP steps the ranks' weights differ by up to "
                     f"{found['weight_spread']:.3g}")
    if not found["moved"] > 0.0:
        raise Failed("DDP steps did not change the weights")
    return (f"{backend}, {world} rank(s): all-reduce = {found['expected']:g}, identical "
            "weights after 3 steps")


def ddp_nccl(s: Settings, cpu_world: Optional[int] = 2) -> Dict:
    """e. DDP over NCCL on every visible GPU (spawned ranks). Without CUDA the same code runs
    over gloo with `cpu_world` CPU ranks and the check reports skip (NCCL untested)."""
    if s.on_cuda:
        if not torch.distributed.is_nccl_available():
            raise Skip("torch has no NCCL")
        world = torch.cuda.device_count()
        return {"detail": judge_ddp(run_ddp("nccl", world, s), "nccl", world)}
    if not cpu_world:
        raise Skip("no CUDA device: NCCL needs GPUs")
    line = judge_ddp(run_ddp("gloo", cpu_world, s), "gloo", cpu_world)
    raise Skip(f"no CUDA device: NCCL needs GPUs (the same DDP code ran: {line})")


# ----------------------------------------------------------------------------- f. batch lifetime
LIFETIME_STEPS = 6
LIFETIME_TOLERANCE = 1e-4  # relative to the gradient's size: kernels may differ in rounding


def conv1_gradients(model, optimizer, batches, steps: int, keep: bool,
                    device: torch.device) -> List[torch.Tensor]:
    """conv1's weight gradient after each of `steps` float32 SGD steps on `batches`, the host
    queueing step s+1 before reading step s's record (`training.records`), as training does.
    `keep=True`: each batch stays in its step record until that step completed (the
    training loop's rule); `keep=False`: every batch is cloned and the clone waited for, so
    no step ever reads DALI's memory (the reference)."""
    from dali_pixmix.training.records import StepRecords

    conv1 = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    records, grads = StepRecords(device, 1), []
    for step, (images, labels) in zip(range(1, steps + 1), batches):
        if not keep:
            images, labels = images.clone(), labels.clone()
            if device.type == "cuda":  # the clone has run: DALI may now reuse its buffer
                torch.cuda.current_stream(device).synchronize()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        grads.append(conv1.weight.grad.detach().clone())
        records.push(loss.detach(), labels, stop=False, save=False, where=(step, 0, step),
                     batch=(images, labels) if keep else ())
        while len(records) > (1 if step < steps else 0):
            records.pop()
    return grads


def _lifetime_run(s: Settings, model, compiled, start: Dict, files, labels, steps: int,
                  keep: bool):
    from dali_pixmix.check.throughput import training_loader

    device = torch.device("cuda", 0)
    model.load_state_dict(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = training_loader(s, files, labels, None, device, batch=s.check_batch)
    return conv1_gradients(compiled, optimizer, iter(loader), steps, keep, device)


def batch_lifetime(s: Settings) -> Dict:
    """f. `train.amp=off`, `model.compile=true`: conv1 (which keeps its input for the
    backward pass) gets the same gradients from DALI's zero-copy batches kept alive by the
    step records as from cloned batches."""
    require_cuda("the zero-copy batch lifetime probe")
    from dali_pixmix.check import fixtures
    from dali_pixmix.models import build_model

    require("nvidia.dali", "DALI", s.on_cuda)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True, warn_only=True)
    files, labels = fixtures.training_files(s, LIFETIME_STEPS * s.check_batch)
    steps = min(LIFETIME_STEPS, len(files) // s.check_batch)
    if steps < 2:
        raise Skip(f"{len(files)} training pictures: too few for 2 batches of {s.check_batch}")
    torch.manual_seed(0)
    model = build_model(s.ddp_arch, 1000).to("cuda:0").to(memory_format=torch.channels_last)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    compiled = torch.compile(model)
    kept = _lifetime_run(s, model, compiled, start, files, labels, steps, keep=True)
    cloned = _lifetime_run(s, model, compiled, start, files, labels, steps, keep=False)
    worst = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
                for a, b in zip(kept, cloned))
    summary = (f"{s.ddp_arch}, torch.compile, float32, channels_last, {steps} steps of "
               f"{s.check_batch} x {s.crop} px from the training loader: conv1 gradients of "
               f"kept zero-copy batches vs cloned ones differ by {worst:.2g} (relative; limit "
               f"{LIFETIME_TOLERANCE:g})")
    if len(kept) != steps or len(cloned) != steps:
        raise Failed(f"{summary}; only {len(kept)}/{len(cloned)} steps ran")
    if worst > LIFETIME_TOLERANCE:
        raise Failed(f"{summary}: a batch was overwritten while its step read it")
    return {"detail": summary, "worst_relative": worst}

