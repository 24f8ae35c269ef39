"""The machine self-check's parts: child isolation, environment advice, goals and the report."""
import faulthandler
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dali_pixmix import cuda_stack
from dali_pixmix.check import environment, harness, report
from dali_pixmix.check.throughput import Goal

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- isolation (pure Python children)
def returns_value(x):
    return {"detail": f"got {x}", "value": x}


def raises_multiline():
    raise RuntimeError("\n  first line of the error\nsecond line\n")


def skips():
    raise harness.Skip("DALI not importable (No module named 'nvidia')")


def starts_helper_and_hangs(pid_file):
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pid_file, "w") as out:
        out.write(str(helper.pid))
    time.sleep(600)


def crashes():
    faulthandler.disable()  # pytest's handler would print the crash on the test's stderr
    os.kill(os.getpid(), signal.SIGSEGV)


def run(func, tmp_path, timeout=30, **kwargs):
    return harness.run_isolated(func, kwargs, timeout=timeout, log_path=tmp_path / "c.log")


def test_child_result_passes_back_with_its_time(tmp_path):
    result = run(returns_value, tmp_path, x=3)
    assert result["status"] == "pass" and result["value"] == 3 and result["detail"] == "got 3"
    assert result["seconds"] >= 0


def test_failure_reports_the_first_line_and_logs_the_traceback(tmp_path):
    result = run(raises_multiline, tmp_path)
    assert result == {"status": "fail", "detail": "RuntimeError: first line of the error",
                      "seconds": result["seconds"]}
    assert "Traceback" in (tmp_path / "c.log").read_text()


def test_skip_keeps_its_reason(tmp_path):
    result = run(skips, tmp_path)
    assert result["status"] == "skip" and result["detail"].startswith("DALI not importable")


def test_timeout_stops_the_check_and_its_helpers(tmp_path):
    pid_file = tmp_path / "helper.pid"
    start = time.perf_counter()
    result = run(starts_helper_and_hangs, tmp_path, timeout=3, pid_file=str(pid_file))
    assert result["status"] == "fail" and "timed out after 3 s" in result["detail"]
    assert time.perf_counter() - start < 20
    helper = int(pid_file.read_text())
    for _ in range(50):  # the helper was in the check's process group: it is gone too
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"helper process {helper} survived the timeout")


def test_a_crash_is_a_failure_not_the_end_of_the_run(tmp_path):
    result = run(crashes, tmp_path)
    assert result["status"] == "fail" and "SIGSEGV" in result["detail"]


def test_first_line_is_shortened():
    assert harness.first_line(ValueError("x" * 500), limit=20) == "ValueError: xxxxx..."
    assert harness.first_line(KeyError()) == "KeyError"


# ---------------------------------------------------------------- environment advice
BASE = {"python": "3.12.3", "torch": "2.14.1+cu130", "torch_cuda": "13.0", "cudnn": "9.24.0",
        "torchvision": "0.29.1", "cuda_available": True, "nccl": "2.30.7",
        "bf16_supported": True, "driver": "580.65.06", "driver_cuda": "13.0", "dali": "2.4.0",
        "dali_wheels": ["nvidia-dali-cuda120"], "pyav": "18.1.0", "pyav_libx264": True,
        "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_gib": 139.8,
                  "capability": "9.0"}], "cpu_cores": 16, "cuda_visible_devices": None,
        "nvimgcodec": "0.9.0.20", "nvimgcodec_path": "/site/nvidia/nvimgcodec/libnvimgcodec.so.0",
        "nvjpeg": "12.4.0", "nvjpeg_path": "/site/nvidia/nvjpeg/lib/libnvjpeg.so.12"}


def texts(env, level):
    return [a["text"] for a in environment.advice({**BASE, **env}) if a["level"] == level]


def test_a_good_node_has_no_warnings_and_says_the_cuda_majors_differ_harmlessly():
    assert texts({}, "warning") == []
    (note,) = texts({}, "note")
    assert "CUDA 13" in note and "nvidia-dali-cuda120 CUDA 12" in note and "fine" in note


def test_driver_too_old_for_torch_is_a_warning():
    (warning,) = texts({"driver": "550.54", "driver_cuda": "12.4"}, "warning")
    assert "torch 2.14.1+cu130 (CUDA 13.0), nvidia-dali-cuda120 (CUDA 12)" in warning
    assert "driver 550.54 (CUDA up to 12.4)" in warning
    assert cuda_stack.TORCH_CUDA12_COMMAND in warning  # the README's fix
    no_gpu = texts({"driver": "550.54", "driver_cuda": "12.4", "cuda_available": False},
                   "warning")
    assert no_gpu == [warning]  # said once, not again as "torch sees no GPU"


def test_driver_too_old_for_dali_is_a_warning():
    warnings = texts({"driver": "470.1", "driver_cuda": "11.4", "torch_cuda": "11.8"},
                     "warning")
    assert any(w.startswith("DALI's GPU operators cannot run") and
               "nvidia-dali-cuda120 (CUDA 12)" in w and "update the driver" in w
               for w in warnings)
    assert not any(w.startswith("torch") for w in warnings)  # same major: minor compatibility


def test_two_dali_wheels_and_missing_packages():
    env = {"dali_wheels": ["nvidia-dali-cuda120", "nvidia-dali-cuda130"]}
    assert any("2 DALI wheels" in w for w in texts(env, "warning"))
    missing = {"dali": None, "dali_error": "ImportError: x", "pyav": None}
    assert any(w.startswith("DALI not importable (ImportError: x)")  # on this CUDA node
               for w in texts(missing, "warning"))
    assert any(n.startswith("PyAV not importable") for n in texts(missing, "note"))


def test_a_cuda_node_without_gpu_decoding_libraries_is_warned_a_cpu_one_noted():
    gone = {"dali": None, "dali_error": "ImportError: libcudart.so.12: cannot open shared "
            "object file", "nvjpeg": None, "nvjpeg_path": None,
            "nvjpeg_error": "OSError: libnvjpeg.so.12: cannot open shared object file"}
    facts = {**BASE, "nvimgcodec_path": "/x/libnvimgcodec.so.0", **gone}
    assert environment.missing_decoding(facts, cuda=False) == [
        "DALI not importable (ImportError: libcudart.so.12: cannot open shared object file)"]
    assert len(environment.missing_decoding(facts, cuda=True)) == 2  # nvJPEG matters there
    (warning,) = texts({"nvimgcodec_path": "/x/libnvimgcodec.so.0", **gone}, "warning")
    assert "libcudart.so.12" in warning and "libnvjpeg.so.12" in warning
    assert warning.endswith("the DALI checks fail")
    notes = texts({"nvimgcodec_path": "/x", **gone, "cuda_available": False, "gpus": [],
                   "driver_cuda": None}, "note")
    assert any(n.startswith("DALI not importable") and "skipped" in n for n in notes)


def test_the_decoding_libraries_are_found_as_dali_finds_them(tmp_path):
    """This machine's wheels: DALI's folder, nvImageCodec beside it, nvJPEG with its version
    read from the library itself; a library that is nowhere gives the loader's error."""
    facts = environment.decoding_libraries()
    assert facts["dali"] and facts["dali_path"].endswith("dali")
    assert facts["nvimgcodec_path"].endswith(".so.0") and facts["nvimgcodec"]
    assert os.path.isfile(facts["nvjpeg_path"]) and facts["nvjpeg"].startswith("12.")
    assert "decoding: DALI " in report.decoding_line(facts)
    lib, path, error = environment.load_library(("libnot_a_library.so.7",), [str(tmp_path)])
    assert lib is None and path is None and "libnot_a_library.so.7" in error
    assert report.decoding_line({"nvjpeg_error": error}).endswith(
        f"nvJPEG not loaded ({error})")


def test_driver_without_gpu_in_torch_is_explained():
    env = {"cuda_available": False, "gpus": [], "cuda_visible_devices": ""}
    (warning,) = texts(env, "warning")
    assert "torch sees no GPU" in warning and "CUDA_VISIBLE_DEVICES is ''" in warning
    assert "is a CPU-only build" in texts({**env, "torch_cuda": None}, "warning")[0]


def test_wheel_names_and_cudnn_numbers():
    assert environment.cuda_major_of_wheel("nvidia-dali-cuda120") == 12
    assert environment.cuda_major_of_wheel("nvidia-dali-cuda110") == 11
    assert environment.cuda_major_of_wheel("nvidia-dali") is None
    assert environment._cudnn_version(92400) == "9.24.0"
    assert environment._cudnn_version(8907) == "8.9.7"


# ---------------------------------------------------------------- goals and report
def test_goals_need_both_rate_and_ratio():
    goal = Goal(min_rate=5000, min_ratio=0.9)
    assert goal.text == "ratio >= 0.9 and > 5,000 img/s"
    assert goal.met(6000, 0.95) is True
    assert goal.met(6000, 0.85) is False and goal.met(4000, 0.95) is False
    assert Goal().met(1.0, None) is None and Goal().text is None


def test_report_counts_failures_and_lists_every_row(tmp_path):
    checks = [{"name": "a", "status": "pass", "detail": "ok", "seconds": 1.0},
              {"name": "b", "status": "fail", "detail": "RuntimeError: boom", "seconds": 2.0},
              {"name": "c", "status": "skip", "detail": "no CUDA device", "seconds": 0.1}]
    speed = [{"name": "s", "status": "pass", "images_per_s": 25000.0,
              "baseline_images_per_s": None, "baseline": "", "ratio": None,
              "goal": "> 20,000 img/s", "met": True, "detail": "batch 256", "seconds": 3.0},
             {"name": "t", "status": "fail", "images_per_s": None,
              "baseline_images_per_s": None, "baseline": None, "ratio": None, "goal": None,
              "met": None, "detail": "timed out after 9 s (stopped)", "seconds": 9.0}]
    rep = report.Report({**BASE}, [], checks, speed, {})
    assert rep.failed == ["b"]
    text = report.console(rep)
    assert "RuntimeError: boom" in text and "25,000" in text and "timed out" in text
    assert "1 pass, 1 fail, 1 skip" in text and "goals met: 1 of 1" in text
    json_path, md_path = rep.write(tmp_path)
    assert json_path.name == "check_gpu.json" and "| b | FAIL |" in md_path.read_text()


# ---------------------------------------------------------------- the run's time budget
def sleeps(s):
    time.sleep(60)


def test_a_check_cut_short_by_the_budget_is_skipped_not_failed(tmp_path, monkeypatch):
    from argparse import Namespace

    from dali_pixmix.check import cli
    from dali_pixmix.check.settings import for_machine

    monkeypatch.setattr(cli, "MIN_SLOT_S", 0.5)
    s = for_machine(False, True, tmp_path, budget_s=2.0)
    args = Namespace(only=None, verbose=False)
    result = cli.run_item("slow", sleeps, s, args, time.monotonic() + 2.0, tmp_path, "[1/1]")
    assert result["status"] == "skip" and "time budget (2 s) ran out" in result["detail"]
    late = cli.run_item("late", sleeps, s, args, time.monotonic(), tmp_path, "[1/1]")
    assert late["status"] == "skip" and "is spent" in late["detail"]


def test_checks_the_budget_left_unrun_are_no_pass(tmp_path, capsys):
    """--budget 1 leaves every check unrun: that is said loudly and the exit status is 3, not
    "0 fail" and 0."""
    import json

    from dali_pixmix.check import cli

    assert cli.main(["--budget", "1", "--out", str(tmp_path / "report")]) == 3
    summary = capsys.readouterr().out.strip().splitlines()[-2]
    names = [name for name, _ in cli.FUNCTIONAL + cli.THROUGHPUT]
    functional = len(cli.FUNCTIONAL)
    assert summary.startswith(f"{functional} functional checks: 0 pass, 0 fail, {functional} skip")
    assert summary.endswith(f". INCOMPLETE: {len(names)} not run or not finished for lack of "
                            f"time ({', '.join(names)}); raise --budget")
    written = json.loads((tmp_path / "report" / "check_gpu.json").read_text())
    assert all(c["out_of_time"] for c in written["checks"] + written["throughput"])


def test_an_unusable_out_folder_is_one_error_line_before_any_check(tmp_path, capsys):
    from dali_pixmix.check import cli

    (tmp_path / "taken").write_text("a file where --out needs a folder\n")
    assert cli.main(["--out", str(tmp_path / "taken" / "report"), "--only", "pixmix_stage"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out: file system error")
    assert str(tmp_path / "taken") in lines[0] and "running" not in captured.out


def test_the_pixmix_execution_flags_reach_every_stage_the_checks_build(tmp_path, capsys):
    from dali_pixmix.check import cli
    from dali_pixmix.check.settings import for_machine
    from dali_pixmix.mixing.bank import MixingBank

    args = cli.parse_args(["--pixmix-strategy", "dense", "--pixmix-cuda-graph"])
    assert (args.pixmix_strategy, args.pixmix_cuda_graph) == ("dense", True)
    assert cli.parse_args([]).pixmix_strategy is None  # the preset: auto
    with pytest.raises(SystemExit):
        cli.parse_args(["--pixmix-strategy", "grouped", "--pixmix-cuda-graph"])
    assert "--pixmix-cuda-graph needs the dense strategy" in capsys.readouterr().err
    bank = MixingBank(torch.zeros((2, 64, 64, 3), dtype=torch.uint8))
    assert for_machine(False, True, tmp_path).pixmix_stage(bank).strategy == "auto"
    s = for_machine(False, True, tmp_path, pixmix_strategy="dense", pixmix_cuda_graph=True)
    stage = s.pixmix_stage(bank)
    assert (stage.strategy, stage.cuda_graph, stage.crop) == ("dense", False, s.crop)  # no CUDA


def test_every_source_is_warmed_up_before_anything_is_timed(tmp_path, monkeypatch):
    """A pipeline's first batches (operators, caches, kernels being built) must not run beside
    another source's timed batches: the baseline would come out low and flatter the ratio."""
    from dali_pixmix.check import fixtures, throughput
    from dali_pixmix.check.settings import for_machine

    events = []

    def source(name):
        count = 0
        while True:
            count += 1
            events.append((name, count))
            yield torch.zeros(2, 1), torch.zeros(2)

    names = iter(["without", "with"])
    monkeypatch.setattr(throughput, "_pipeline_batches", lambda s, device, bank=None:
                        source(next(names)))
    monkeypatch.setattr(throughput, "require", lambda module, what, cuda=False: None)
    monkeypatch.setattr(fixtures, "mixing_bank", lambda s, device: None)
    monkeypatch.setattr(throughput.time, "sleep", lambda seconds: None)
    s = for_machine(False, True, tmp_path)
    throughput.pipeline_pixmix(s)
    first_with = events.index(("with", 1))
    assert events[:first_with] == [("without", i) for i in (1, 2, 3)]  # warm-up draws only
    assert events[first_with:first_with + 3] == [("with", i) for i in (1, 2, 3)]


def test_the_run_line_says_when_how_long_which_code_and_command():
    full = report.Report({"dali_pixmix": "0.1.0", "git": "0123456789abcdef+dirty"},
                         run={"started": "2026-11-30 04:45 UTC", "seconds": 311.6,
                              "command": "tools/check_gpu.py --quick"})
    assert report.run_line(full) == ("2026-11-30 04:45 UTC, 312 s, dali-pixmix 0.1.0 (git "
                                     "0123456789ab), `tools/check_gpu.py --quick`")
    assert report.run_line(report.Report({})) == "start unknown, dali-pixmix ? (git ?)"
