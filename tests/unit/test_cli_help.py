"""`--help` of the command-line scripts: fast (nothing heavy imported before the arguments are
parsed) and each default stated once."""
import argparse
import re
import subprocess
import sys

import pytest
from child_env import REPO, child_env

from dali_pixmix.cli_help import DefaultsHelpFormatter

pytestmark = pytest.mark.unit

HELP_SCRIPTS = sorted(str(p.relative_to(REPO)) for p in (REPO / "eval").glob("*.py")) + [
    "tools/compare_methods.py"]
# Prints the heavy modules a script's `--help` loaded, then its help text.
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "nvidia.dali", "sklearn") if m in sys.modules))
"""


def test_the_formatter_states_each_default_once_and_only_when_it_says_something():
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--arch", default=None, help="model (default: the checkpoint's)")
    parser.add_argument("--size", type=int, default=3, help="a size")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--names", nargs="*", default=[], help="names")
    text = " ".join(parser.format_help().split())
    assert text.count("(default:") == 2
    assert "model (default: the checkpoint's)" in text and "a size (default: 3)" in text


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_help_loads_no_torch_dali_or_sklearn_and_says_each_default_once(script):
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO / script)], capture_output=True,
                          text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout.splitlines()[-1]
    text = " ".join(done.stdout.split())
    assert "usage:" in text
    assert not re.search(r"\(default: [^)]*\) \(default:", text), script
