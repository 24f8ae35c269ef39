"""The CUDA stack verdicts (torch's CUDA build, DALI's wheel, the driver) from given versions,
and the README's two fixing commands, which the verdicts quote."""
import re
from pathlib import Path

import pytest

from dali_pixmix import cuda_stack
from dali_pixmix.cuda_stack import DALI_CUDA13_COMMAND, TORCH_CUDA12_COMMAND

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DEFAULT = {"torch_version": "2.14.1+cu130", "torch_cuda": "13.0",
           "wheels": ["nvidia-dali-cuda120"]}  # what `pip install -e .` gives


def problems(driver, driver_cuda, **stack):
    return cuda_stack.problems(**{**DEFAULT, **stack}, driver=driver, driver_cuda=driver_cuda)


def test_the_default_install_fits_a_580_driver_and_no_driver_is_no_mismatch():
    assert problems("580.65.06", "13.0") == []
    assert problems(None, None) == []  # a CPU machine: nothing to fix


def test_a_cuda_12_driver_names_the_stack_and_the_torch_cuda_12_command():
    (line,) = problems("550.54.15", "12.4")
    assert line.startswith("torch cannot use the GPUs: ")
    assert ("torch 2.14.1+cu130 (CUDA 13.0), nvidia-dali-cuda120 (CUDA 12), driver 550.54.15 "
            "(CUDA up to 12.4)") in line
    assert line.endswith(f"install torch's CUDA 12 build: {TORCH_CUDA12_COMMAND}")
    # after that command: torch cu128 and DALI cuda120 both run on the 12.4 driver
    assert problems("550.54.15", "12.4", torch_version="2.14.1+cu128", torch_cuda="12.8") == []


def test_dali_for_cuda_13_on_a_cuda_12_driver_says_how_to_go_back():
    (line,) = problems("570.1", "12.8", torch_version="2.14.1+cu128", torch_cuda="12.8",
                       wheels=["nvidia-dali-cuda130"])
    assert line.startswith("DALI's GPU operators cannot run: ")
    assert "nvidia-dali-cuda130 (CUDA 13)" in line and "driver 570.1 (CUDA up to 12.8)" in line
    assert line.endswith("pip uninstall -y nvidia-dali-cuda130 && pip install -e .")
    # the Quickstart's CUDA 13 stack on a 580 driver
    assert problems("580.1", "13.0", wheels=["nvidia-dali-cuda130"]) == []


def test_a_cuda_11_driver_needs_a_newer_driver_for_both():
    lines = problems("470.1", "11.4")
    assert [line.split(":")[0] for line in lines] == ["torch cannot use the GPUs",
                                                      "DALI's GPU operators cannot run"]
    assert all(line.endswith(cuda_stack.UPDATE_DRIVER) for line in lines)


@pytest.mark.parametrize("stack, visible, expected", [
    ({"torch_cuda": None, "torch_version": "2.14.1+cpu"}, None, "torch 2.14.1+cpu is a CPU-only"),
    ({"driver": "580.1", "driver_cuda": "13.0"}, "", "CUDA_VISIBLE_DEVICES is ''"),
    ({"driver": None, "driver_cuda": None}, None, "no NVIDIA driver is loaded"),
    ({"driver": "550.54", "driver_cuda": "12.4"}, None,
     "the driver is too old for this torch build: torch cannot use the GPUs"),
    ({"driver": "580.1", "driver_cuda": "13.0"}, "3", "CUDA_VISIBLE_DEVICES is '3'"),
])
def test_why_torch_sees_no_gpu(stack, visible, expected):
    args = {**DEFAULT, "driver": None, "driver_cuda": None, **stack}
    assert expected in cuda_stack.no_gpu_reason(**args, visible=visible)


def test_the_readme_quickstart_gives_both_commands_and_the_driver():
    quickstart = (ROOT / "README.md").read_text().split("## Quickstart")[1].split("\n## ")[0]
    assert TORCH_CUDA12_COMMAND in quickstart and DALI_CUDA13_COMMAND in quickstart
    assert "580" in quickstart  # the driver the default install needs


def test_the_commands_install_what_setup_py_admits():
    """The CUDA 12 command's torch/torchvision series are the ones setup.py pins (so the
    `pip install -e .` after it keeps them), and the DALI range is setup.py's."""
    setup = (ROOT / "setup.py").read_text()
    for name in ("torch", "torchvision"):
        series = re.search(rf"'{name}==(\d+\.\d+)\.\*'", TORCH_CUDA12_COMMAND).group(1)
        major, minor = map(int, series.split("."))
        assert f'"{name}>={series},<{major}.{minor + 1}"' in setup
    dali_range = re.search(r"nvidia-dali-cuda130(>=[^']+)'", DALI_CUDA13_COMMAND).group(1)
    assert f'"nvidia-dali-cuda120{dali_range}"' in setup
