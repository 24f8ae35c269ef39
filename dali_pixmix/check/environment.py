"""What this machine runs: Python, torch, torchvision, DALI, nvImageCodec, nvJPEG, PyAV, driver,
GPUs, NCCL.

`collect()` gathers the facts (it initialises CUDA, so it runs in a check's child process);
`advice(env)` turns known-bad combinations into warning and note lines. The driver is asked
directly through its libraries (`libcuda.so.1`, `libnvidia-ml.so.1`), so the answer does not
depend on torch being able to use it. nvImageCodec and nvJPEG (which DALI loads when it first
decodes) are found in DALI's own search order and loaded, so the report names the files a
decoder will use and the exact error where one cannot be loaded (`decoding_libraries`).
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
from typing import Dict, List, Optional, Tuple

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
        return {"dali": None, "dali_error": first_line(err, IMPORT_ERROR_LIMIT)}
    return {"dali": dali.__version__, "dali_path": os.path.dirname(dali.__file__)}


# ----------------------------------------------------------------------------- image codecs
IMPORT_ERROR_LIMIT = 400  # characters of an import error kept (a missing .so names a path)
# Where DALI's decoders find nvImageCodec (DALI's RUNPATH `$ORIGIN/../nvimgcodec`, then the
# package's install folder) and where nvImageCodec's nvJPEG extension finds libnvjpeg (its
# RUNPATH `$ORIGIN/../../nvjpeg/lib`, then the CUDA toolkit); relative folders are under the
# `nvidia` namespace package of the wheels. The system's library path comes last.
NVIMGCODEC_FOLDERS = ("nvimgcodec", "/opt/nvidia/nvimgcodec_cuda{cuda}/lib64")
NVJPEG_FOLDERS = ("nvjpeg/lib", "/usr/local/cuda/lib64")


def _wheel_folders() -> List[str]:
    """Folders of the `nvidia` namespace package (where the NVIDIA wheels install)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def _candidates(folders, cuda: int) -> List[str]:
    out = []
    for folder in folders:
        folder = folder.format(cuda=cuda)
        out += [folder] if os.path.isabs(folder) else [os.path.join(root, folder)
                                                      for root in _wheel_folders()]
    return out


def _mapped_file(name: str) -> Optional[str]:
    """The file of a loaded library whose name starts with `name` (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith(name):
                    return path
    except OSError:
        pass
    return None


def load_library(names, folders) -> Tuple[Optional[ctypes.CDLL], Optional[str], Optional[str]]:
    """(library, its file, None) for the first of `names` in `folders`, else as the system's
    loader finds it; (None, None, the loader's error) when it cannot be loaded."""
    path = next((os.path.realpath(os.path.join(folder, name)) for folder in folders
                 for name in names if os.path.isfile(os.path.join(folder, name))), None)
    try:
        lib = ctypes.CDLL(path or names[0])
    except OSError as err:
        return None, None, first_line(err, IMPORT_ERROR_LIMIT)
    return lib, path or _mapped_file(names[0].split(".so")[0] + ".so"), None


def nvjpeg_version(lib) -> Optional[str]:
    """"12.4.0" from `nvjpegGetProperty` (MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL)."""
    parts = []
    for which in range(3):
        value = ctypes.c_int(0)
        if lib.nvjpegGetProperty(which, ctypes.byref(value)) != 0:
            return None
        parts.append(str(value.value))
    return ".".join(parts)


def _codec_wheel_version(prefix: str) -> Optional[str]:
    return next(iter(cuda_stack.installed(prefix).values()), None)


def decoding_libraries(cuda_major: Optional[int] = None) -> Env:
    """DALI (version, folder or import error), nvImageCodec and nvJPEG (version, the file a
    decoder loads, or the loader's error); `cuda_major` is the DALI wheel's CUDA major
    (default: the installed wheel's, else 12)."""
    if cuda_major is None:
        cuda_major = wheel_cuda_major(dali_wheels())
    facts = _dali_facts()
    _, path, error = load_library(("libnvimgcodec.so.0", "libnvimgcodec.so"),
                                  _candidates(NVIMGCODEC_FOLDERS, cuda_major))
    facts.update(nvimgcodec=_codec_wheel_version("nvidia-nvimgcodec") if path else None,
                 nvimgcodec_path=path, nvimgcodec_error=error)
    lib, path, error = load_library((f"libnvjpeg.so.{cuda_major}", "libnvjpeg.so"),
                                    _candidates(NVJPEG_FOLDERS, cuda_major))
    facts.update(nvjpeg=nvjpeg_version(lib) if lib else None, nvjpeg_path=path,
                 nvjpeg_error=error)
    return facts


def wheel_cuda_major(wheels: List[str]) -> int:
    """The CUDA major of the first installed DALI wheel (12 when none tells)."""
    return (cuda_major_of_wheel(wheels[0]) if wheels else None) or 12


def missing_decoding(env: Env, cuda: bool) -> List[str]:
    """What GPU decoding lacks here, one line each with the exact error: DALI and nvImageCodec
    (its CPU decoders need it too), and on CUDA nvJPEG."""
    out = []
    if env.get("dali") is None:
        out.append(f"DALI not importable ({env.get('dali_error')})")
    if env.get("nvimgcodec_path") is None:
        out.append(f"nvImageCodec cannot be loaded ({env.get('nvimgcodec_error')})")
    if cuda and env.get("nvjpeg_path") is None:
        out.append(f"nvJPEG cannot be loaded ({env.get('nvjpeg_error')})")
    return out


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
    wheels = dali_wheels()
    env.update(decoding_libraries(wheel_cuda_major(wheels)))
    env.update(dali_wheels=wheels, pillow=_version("pillow"))
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
    missing = missing_decoding(env, bool(env.get("cuda_available")))
    if missing and env.get("cuda_available"):
        out.append(_warn("; ".join(missing) + ": GPU decoding cannot work here, the DALI "
                         "checks fail"))
    elif env.get("dali") is None:
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
    return cuda_stack.torch_too_new(env.get("torch_cuda"), env.get("driver_cuda"))


def _no_gpu_reason(env: Env) -> str:
    return cuda_stack.no_gpu_reason(**_stack(env), visible=env.get("cuda_visible_devices"))


def advice(env: Env) -> List[Dict[str, str]]:
    """Warnings (things that will fail) and notes (worth knowing) for this environment."""
    if "error" in env:
        return [_warn(f"the environment could not be read: {env['error']}")]
    return _driver_advice(env) + _gpu_advice(env) + _package_advice(env)
