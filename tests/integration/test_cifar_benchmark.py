"""benchmarks/cifar_data_path.py at toy size: both data paths run and are reported."""
import json

import pytest
from entry_points import load_script

pytestmark = pytest.mark.integration


def test_cifar_data_path_benchmark_reports_both_paths(tmp_path, capsys):
    out = tmp_path / "result.json"
    code = load_script("benchmarks/cifar_data_path.py").main([
        "--images", "40", "--mixing", "4", "--mixing-size", "48", "--cache-dir",
        str(tmp_path / "cache"), "--batch-size", "8", "--measure", "16", "--rounds", "1",
        "--settle", "0", "--workers", "1", "--device", "cpu", "--no-train", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["a_dali_pixmix"] > 0 and result["b_reference"] > 0
    assert result["ratio_a_over_b"] == pytest.approx(result["a_dali_pixmix"]
                                                     / result["b_reference"])
    assert "a/b = " in capsys.readouterr().out
