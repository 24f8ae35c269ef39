"""tools/check_gpu.py end to end on this machine: the CPU subset runs, CUDA checks are skipped
with their reason, the JSON holds every check and measurement, and the script still works when
DALI and PyAV cannot be imported (a CPU machine may lack them); on a CUDA machine (faked here)
a missing DALI fails the run with the import error."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from child_env import child_env

from dali_pixmix.check.cli import FUNCTIONAL, THROUGHPUT

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "check_gpu.py"
CHECKS = [name for name, _ in FUNCTIONAL]
MEASUREMENTS = [name for name, _ in THROUGHPUT]
CUDA_ONLY = {"nvjpeg_decode", "stage_no_sync", "batch_lifetime", "ddp_nccl", "video_decode",
             "eval_gpu_vs_cpu"}
CUDA_ONLY_SPEED = {"train_decode", "pipeline_cuda_graph"}
THROUGHPUT_KEYS = {"name", "status", "images_per_s", "baseline_images_per_s", "baseline",
                   "ratio", "goal", "met", "detail", "seconds"}
BLOCKER = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("av", "nvidia.dali") or name.startswith(("av.", "nvidia.dali.")):
            raise ImportError(f"No module named {name!r} (blocked for this test)")
        return None
sys.meta_path.insert(0, Block())
'''
# "CUDA present" through the check's own seam: the environment facts the run is sized from
FAKE_CUDA = '''
import dali_pixmix.check.environment as environment
real_facts = environment._torch_facts
def cuda_present():
    return {**real_facts(), "cuda_available": True, "gpus": [
        {"index": 0, "name": "faked for a test", "memory_gib": 80.0, "capability": "9.0"}]}
environment._torch_facts = cuda_present
'''


def run_check(out: Path, *extra, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cpu_run_reports_every_check_and_skips_cuda_ones(tmp_path):
    """The whole quick run, with the stage in the strategy a GPU uses by default (dense)."""
    done = run_check(tmp_path / "out", "--pixmix-strategy", "dense", env=child_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Functional checks" in done.stdout and "Throughput" in done.stdout
    assert "[check 2/9] nvjpeg_decode: running" in done.stdout  # progress as it goes
    result = json.loads((tmp_path / "out" / "check_gpu.json").read_text())
    assert set(result) >= {"environment", "checks", "throughput"}
    assert result["environment"]["cuda_available"] is False
    assert [c["name"] for c in result["checks"]] == CHECKS
    assert [t["name"] for t in result["throughput"]] == MEASUREMENTS
    status = {c["name"]: c for c in result["checks"]}
    for name in CUDA_ONLY:
        assert status[name]["status"] == "skip", status[name]
        assert "no CUDA device" in status[name]["detail"]
    assert "gloo, 2 rank(s)" in status["ddp_nccl"]["detail"]  # the DDP code did run
    assert status["train_pipeline"]["status"] == "pass"
    assert status["amp_channels_last"]["status"] == "pass"
    assert status["decode_libraries"]["status"] == "pass"
    assert "nvImageCodec" in status["decode_libraries"]["detail"]
    for row in result["throughput"]:
        assert set(row) == THROUGHPUT_KEYS, row
        if row["name"] in CUDA_ONLY_SPEED:
            assert row["status"] == "skip" and "no CUDA device" in row["detail"], row
            continue
        assert row["status"] == "pass", row
        assert row["images_per_s"] > 0 and row["met"] is None  # GPU goals are not judged here
    assert (tmp_path / "out" / "check_gpu.md").read_text().startswith("# dali-pixmix")
    run = result["run"]  # when, how long, which code and command: a figure can be traced
    assert run["command"] == f"tools/check_gpu.py --quick --out {tmp_path / 'out'} " \
        "--pixmix-strategy dense" and 0 < run["seconds"] < 600
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", run["started"])
    assert result["environment"]["dali_pixmix"] and result["environment"]["git"]
    assert f"Run: {run['started']}, " in (tmp_path / "out" / "check_gpu.md").read_text()
    rows = {t["name"]: t for t in result["throughput"]}
    for name in ("pipeline_pixmix", "train_step"):
        assert rows[name]["detail"].endswith("PixMix strategy dense"), rows[name]
    assert "img/s: grouped " in rows["pixmix_stage"]["detail"]  # every strategy is timed
    assert ", dense " in rows["pixmix_stage"]["detail"]
    assert "MB with CUDA-graph capacities" in rows["pixmix_stage"]["detail"]  # traffic/image
    assert "nvJPEG 12." in done.stdout  # the environment names the decoding libraries


def test_runs_without_dali_and_pyav(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = child_env(blocker)
    chosen = "nvjpeg_decode,train_pipeline,amp_channels_last,video_decode,pixmix_stage," \
             "pipeline_pixmix,imagenet_p_video"
    done = run_check(tmp_path / "out", "--only", chosen, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "check_gpu.json").read_text())
    assert result["environment"]["dali"] is None and result["environment"]["pyav"] is None
    rows = {r["name"]: r for r in result["checks"] + result["throughput"]}
    for name in ("nvjpeg_decode", "video_decode", "pipeline_pixmix"):
        assert rows[name]["status"] == "skip"
        assert rows[name]["detail"].startswith("DALI not importable"), rows[name]
    assert "DALI not importable" in rows["train_pipeline"]["detail"]
    assert rows["imagenet_p_video"]["detail"].startswith("PyAV not importable")
    assert rows["amp_channels_last"]["status"] == "pass"  # pure torch checks still run
    assert rows["pixmix_stage"]["status"] == "pass" and rows["pixmix_stage"]["images_per_s"] > 0
    assert rows["eval_gpu_vs_cpu"]["detail"] == "not selected (--only)"


def test_a_cuda_machine_without_dali_fails_naming_the_import_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER + FAKE_CUDA)
    chosen = "decode_libraries,nvjpeg_decode,pipeline_pixmix"
    done = run_check(tmp_path / "out", "--only", chosen, env=child_env(site))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    error = "No module named 'nvidia.dali' (blocked for this test)"
    result = json.loads((tmp_path / "out" / "check_gpu.json").read_text())
    assert result["environment"]["cuda_available"] is True  # the fake took hold
    rows = {r["name"]: r for r in result["checks"] + result["throughput"]}
    for name in ("decode_libraries", "nvjpeg_decode", "pipeline_pixmix"):
        assert rows[name]["status"] == "fail" and error in rows[name]["detail"], rows[name]
    assert rows["decode_libraries"]["detail"].startswith("on this CUDA machine: DALI not "
                                                         "importable (ImportError: ")
    assert "FAILED: decode_libraries, nvjpeg_decode" in done.stdout
    assert f"warning: DALI not importable (ImportError: {error})" in done.stdout

