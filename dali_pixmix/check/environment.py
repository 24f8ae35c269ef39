"""What this machine runs: Python, torch, torchvision, DALI, PyAV, driver, GPUs, NCCL.

`collect()` gathers the facts (it initialises CUDA, so it runs in a check's child process);
`advice(env)` turns known-bad combinations into warning and note lines. The driver is asked
directly through its libraries (`libcuda.so.1`, `libnvidia-ml.so.1`), so the answer does not
depend on torch being able to use it.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Dict, List, Optional

from dali_pixmix import cuda_stack
from dali_pixmix.check.harness import first_line
from dali_pixmix.cuda_stack import (  # the driver facts (moved there; training reads them too)
    cuda_major_of_wheel,
    dali_wheels,
    driver_cuda_version,
    driver_version,
)

Env = Dict[str, object]


# ----------------------------------------------------------------------------- packages
def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _dali_facts() -> Env:
    try:
        import nvidia.dali as dali
    except ImportError as err:
        return {"dali": None, "dali_error": first_line(err)}
    return {"dali": dali.__version__}


def _pyav_facts() -> Env:
    try:
        import av
    except ImportError as err:
        return {"pyav": None, "pyav_error": first_line(err)}
    try:
        av.codec.Codec("libx264", "w")
        encoder = True
    except Exception:  # noqa: BLE001 - FFmpeg build without libx264
        encoder = False
    return {"pyav": av.__version__, "pyav_libx264": encoder}


# ----------------------------------------------------------------------------- torch and GPUs
def _gpus(torch) -> List[Env]:
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name,
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "capability": f"{props.major}.{props.minor}"})
    return gpus


def _nccl_version(torch) -> Optional[str]:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 - torch without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _cudnn_version(number: Optional[int]) -> Optional[str]:
    """92400 -> "9.24.0" (cuDNN 9 numbering), 8907 -> "8.9.7" (cuDNN 8)."""
    if not number:
        return None
    if number >= 90000:
        return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
    return f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


def _torch_facts() -> Env:
    import torch
    import torchvision

    cudnn = _cudnn_version(torch.backends.cudnn.version()) \
        if torch.backends.cudnn.is_available() else None
    facts: Env = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cudnn": cudnn, "torchvision": torchvision.__version__,
                  "cuda_available": torch.cuda.is_available(), "gpus": [],
                  "nccl": None, "bf16_supported": False}
    if facts["cuda_available"]:
        facts.update(gpus=_gpus(torch), nccl=_nccl_version(torch),
                     bf16_supported=torch.cuda.is_bf16_supported())
    return facts


def collect() -> Env:
    """Every fact `advice` and the report use (JSON values only)."""
    env: Env = {"python": platform.python_version(), "platform": platform.platform(),
                "cpu_cores": os.cpu_count(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    env.update(_torch_facts())
    env.update(driver=driver_version(), driver_cuda=driver_cuda_version())
    env.update(_dali_facts())
    env.update(dali_wheels=dali_wheels(), pillow=_version("pillow"))
    env.update(_pyav_facts())
    from dali_pixmix.provenance import provenance

    env.update(dali_pixmix=provenance()["dali_pixmix"], git=provenance()["git_revision"])
    return env


# ----------------------------------------------------------------------------- advice
def _stack(env: Env) -> Dict[str, object]:
    """The arguments of `cuda_stack.problems` from the collected facts."""
    return {"torch_version": env.get("torch"), "torch_cuda": env.get("torch_cuda"),
            "wheels": env.get("dali_wheels") or [], "driver": env.get("driver"),
            "driver_cuda": env.get("driver_cuda")}


def _driver_advice(env: Env) -> List[Dict[str, str]]:
    """A warning per part of the stack the driver cannot run, with the command that fixes it
    (`cuda_stack.problems`); else a note when torch and DALI use two CUDA majors the driver
    both supports (the default install on a 580+ driver)."""
    found = cuda_stack.problems(**_stack(env))
    if found or not env.get("driver_cuda"):
        return [_warn(text) for text in found]
    torch_major = cuda_stack.major(env.get("torch_cuda"))
    out = []
    for wheel in env.get("dali_wheels") or []:
        major = cuda_major_of_wheel(wheel)
        if major and torch_major and major != torch_major:
            out.append(_note(f"torch uses CUDA {torch_major} and {wheel} CUDA {major}: fine, "
                             f"the driver ({env.get('driver') or 'version unknown'}) supports "
                             f"CUDA up to {env['driver_cuda']}, and both share one CUDA "
                             "context through it"))
    return out


def _warn(text: str) -> Dict[str, str]:
    return {"level": "warning", "text": text}


def _note(text: str) -> Dict[str, str]:
    return {"level": "note", "text": text}


def _package_advice(env: Env) -> List[Dict[str, str]]:
    out = []
    wheels = env.get("dali_wheels") or []
    if len(wheels) > 1:
        out.append(_warn(f"{len(wheels)} DALI wheels are installed ({', '.join(wheels)}): keep "
                         "exactly one (pip uninstall the others)"))
    if env.get("dali") is None:
        out.append(_note(f"DALI not importable ({env.get('dali_error')}): the DALI checks "
                         "are skipped"))
    if env.get("pyav") is None:
        out.append(_note("PyAV not importable: the video checks are skipped (the test "
                         "videos are encoded with it)"))
    elif not env.get("pyav_libx264"):
        out.append(_note("PyAV's FFmpeg has no libx264 encoder: the H.264 test videos cannot "
                         "be made, the video checks are skipped"))
    return out


def _gpu_advice(env: Env) -> List[Dict[str, str]]:
    out = []
    if not env.get("cuda_available"):
        if env.get("driver_cuda") and not torch_too_new(env):  # (else warned above)
            out.append(_warn("an NVIDIA driver is installed but torch sees no GPU "
                             f"({_no_gpu_reason(env)})"))
        out.append(_note("no CUDA device: only the CPU subset runs"))
        return out
    if env.get("nccl") is None:
        out.append(_warn("torch has no NCCL: multi-GPU training (DDP) cannot use the GPUs"))
    if not env.get("bf16_supported"):
        out.append(_note("this GPU has no bfloat16: use train.amp=fp16 (GradScaler)"))
    return out


def torch_too_new(env: Env) -> bool:
    """torch is built for a newer CUDA than the driver supports."""
    return any(p.startswith("torch") for p in cuda_stack.problems(**_stack(env)))


def _no_gpu_reason(env: Env) -> str:
    return cuda_stack.no_gpu_reason(**_stack(env), visible=env.get("cuda_visible_devices"))


def advice(env: Env) -> List[Dict[str, str]]:
    """Warnings (things that will fail) and notes (worth knowing) for this environment."""
    if "error" in env:
        return [_warn(f"the environment could not be read: {env['error']}")]
    return _driver_advice(env) + _gpu_advice(env) + _package_advice(env)
