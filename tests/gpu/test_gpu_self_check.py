"""tools/check_gpu.py on a CUDA machine: every functional check passes (the video check may be
skipped where PyAV is missing: it encodes the test videos)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]


def test_functional_checks_pass_on_this_gpu(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "check_gpu.py"), "--quick",
                           "--functional-only", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    result = json.loads((tmp_path / "check_gpu.json").read_text())
    statuses = {c["name"]: (c["status"], c["detail"]) for c in result["checks"]}
    assert done.returncode == 0, statuses
    for name, (status, detail) in statuses.items():
        if name == "video_decode" and "PyAV" in detail:
            continue
        assert status == "pass", (name, detail)


class ReadsOnTheHost:
    """A stage that makes the host wait for the GPU (`float(cuda tensor)`)."""
    crop, seed = 32, 0

    def for_pipeline(self, seed, dtype, layout, start=0):
        return self

    def apply(self, batch):
        return batch.float() * float(batch.float().mean())


def test_the_sync_check_without_dali_catches_a_host_read_on_a_side_stream(tmp_path):
    """stage_no_sync's path for a node without DALI, with torch's real switch: the PixMix stage
    (dense, the GPU default) passes; a stage that reads a value on the host is caught."""
    import torch

    from dali_pixmix.check import fixtures, functional
    from dali_pixmix.check.settings import for_machine

    s = for_machine(True, True, tmp_path)
    stage = s.pixmix_stage(fixtures.mixing_bank(s, "cuda:0"))
    batch = torch.from_numpy(fixtures.picture_pool(s.crop, 8, 1, seed=3)[0]).to("cuda:0")
    assert functional.run_checked_batches(stage, batch, 3) == {"device": "cuda:0", "calls": 3}
    small = batch[:, :32, :32].contiguous()
    report = functional.run_checked_batches(ReadsOnTheHost(), small, 3)
    assert "synchroniz" in report["error"] and "calls" not in report, report
