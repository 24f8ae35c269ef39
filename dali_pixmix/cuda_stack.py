"""The CUDA stack of this install: torch's CUDA build, DALI's CUDA wheel and the NVIDIA driver.

The default install (`pip install -e .`) pairs PyPI's torch (a CUDA 13 build, driver 580 or
newer) with `nvidia-dali-cuda120` (CUDA 12). Both run on one driver that supports the newer of
the two; a component built for a newer CUDA than the driver supports cannot use the GPU. The
README's Quickstart gives the two commands that make the stack fit a driver; `problems()` names
the versions that disagree and the command that fixes them (`tools/check_gpu.py` and training
print it), `no_gpu_reason()` says why torch sees no GPU. The driver is asked directly through
its libraries (`libcuda.so.1`, `libnvidia-ml.so.1`), so the answer does not depend on torch
being able to use it, and nothing here initialises CUDA.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
from typing import Dict, List, Optional, Sequence

# The README Quickstart's two commands (tests/unit/test_docs.py keeps them in step).
TORCH_CUDA12_COMMAND = ("pip install 'torch==2.14.*' 'torchvision==0.29.*' --index-url "
                        "https://download.pytorch.org/whl/cu128 && pip install -e .")
DALI_CUDA13_COMMAND = ("pip install -e . && pip uninstall -y nvidia-dali-cuda120 && pip install "
                       "--extra-index-url https://pypi.nvidia.com 'nvidia-dali-cuda130>=2.0,<3'")

UPDATE_DRIVER = ("update the driver: 580 or newer runs the default install, 525.60 or newer "
                 "runs it with torch's CUDA 12 build")


# ----------------------------------------------------------------------------- driver
def driver_cuda_version() -> Optional[str]:
    """The newest CUDA version the installed driver supports ("12.4"), or None without one."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value == 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def driver_version() -> Optional[str]:
    """The NVIDIA driver's version ("580.65.06") from NVML, or None."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        buffer = ctypes.create_string_buffer(96)
        if nvml.nvmlSystemGetDriverVersion(buffer, ctypes.c_uint(96)) != 0:
            return None
        return buffer.value.decode()
    finally:
        nvml.nvmlShutdown()


# ----------------------------------------------------------------------------- DALI wheels
def installed(prefix: str) -> Dict[str, str]:
    """{name: version} of the installed distributions whose name (lower case, `-` for `_`)
    starts with `prefix`."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(prefix):
            found[name] = dist.version
    return found


def dali_wheels() -> List[str]:
    """Installed DALI distributions (`nvidia-dali-cuda120`, ...): more than one is a conflict."""
    return sorted(installed("nvidia-dali-cuda"))


def cuda_major_of_wheel(name: str) -> Optional[int]:
    """12 for `nvidia-dali-cuda120`, 13 for `-cuda130`, 11 for `-cuda110`."""
    match = re.search(r"cuda(\d\d)\d$", name)
    return int(match.group(1)) if match else None


def major(version: Optional[str]) -> Optional[int]:
    return int(str(version).split(".")[0]) if version else None


# ----------------------------------------------------------------------------- verdicts
def describe(torch_version: str, torch_cuda: Optional[str], wheels: Sequence[str],
             driver: Optional[str], driver_cuda: Optional[str]) -> str:
    """'torch 2.14.1+cu130 (CUDA 13.0), nvidia-dali-cuda120 (CUDA 12), driver 550.54 (CUDA
    up to 12.4)': the three parts of the stack in one phrase."""
    dali = ", ".join(f"{w} (CUDA {cuda_major_of_wheel(w)})" for w in wheels) or "no DALI wheel"
    return (f"torch {torch_version} (CUDA {torch_cuda or 'none: a CPU-only build'}), {dali}, "
            f"driver {driver or 'version unknown'} (CUDA up to {driver_cuda})")


def torch_too_new(torch_cuda: Optional[str], driver_cuda: Optional[str]) -> bool:
    """torch is built for a newer CUDA major than the driver supports."""
    torch_major, driver_major = major(torch_cuda), major(driver_cuda)
    return bool(torch_major and driver_major is not None and torch_major > driver_major)


def problems(torch_version: str, torch_cuda: Optional[str], wheels: Sequence[str],
             driver: Optional[str], driver_cuda: Optional[str]) -> List[str]:
    """One line per part of the stack built for a newer CUDA than the driver supports, naming
    the whole stack and the command that fixes it; [] when every part fits (or no driver)."""
    driver_major = major(driver_cuda)
    if driver_major is None:
        return []
    stack = describe(torch_version, torch_cuda, wheels, driver, driver_cuda)
    out = []
    if torch_too_new(torch_cuda, driver_cuda):
        fix = (f"install torch's CUDA 12 build: {TORCH_CUDA12_COMMAND}" if driver_major == 12
               else UPDATE_DRIVER)
        out.append(f"torch cannot use the GPUs: {stack}; {fix}")
    for wheel in wheels:
        wheel_major = cuda_major_of_wheel(wheel)
        if wheel_major and wheel_major > driver_major:
            fix = (f"go back to DALI's CUDA 12 wheel: pip uninstall -y {wheel} && pip install "
                   "-e ." if driver_major == 12 else UPDATE_DRIVER)
            out.append(f"DALI's GPU operators cannot run: {stack}; {fix}")
    return out


def no_gpu_reason(torch_version: str, torch_cuda: Optional[str], wheels: Sequence[str],
                  driver: Optional[str], driver_cuda: Optional[str],
                  visible: Optional[str]) -> str:
    """Why torch sees no GPU, as far as the versions and CUDA_VISIBLE_DEVICES tell."""
    if not torch_cuda:
        return f"torch {torch_version} is a CPU-only build (pip install -e . installs a CUDA one)"
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES is {visible!r}"
    if driver_cuda is None:
        return ("no NVIDIA driver is loaded (libcuda.so.1 not found): a machine without GPU, "
                "or a container started without --gpus")
    if torch_too_new(torch_cuda, driver_cuda):
        found = problems(torch_version, torch_cuda, wheels, driver, driver_cuda)
        return f"the driver is too old for this torch build: {found[0]}"
    hidden = f", CUDA_VISIBLE_DEVICES is {visible!r}" if visible is not None else ""
    return (f"torch.cuda.is_available() is false although the driver {driver or ''} supports "
            f"CUDA {driver_cuda} (no GPU visible to this process{hidden}? check nvidia-smi)")


def this_machine() -> dict:
    """The arguments of `problems` / `no_gpu_reason` for this process (torch imported)."""
    import torch

    return {"torch_version": torch.__version__, "torch_cuda": torch.version.cuda,
            "wheels": dali_wheels(), "driver": driver_version(),
            "driver_cuda": driver_cuda_version()}


def why_no_gpu() -> str:
    """`no_gpu_reason` for this process."""
    return no_gpu_reason(**this_machine(), visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
