"""The environment of child processes (scripts, torchrun) that must import this checkout."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_env(*first, **changes) -> dict:
    """`os.environ` with PYTHONPATH = `first`, the repository, then what PYTHONPATH already held:
    some machines provide packages only that way (an offline GPU node's unpacked DALI wheels),
    and a child that loses them fails where the test itself passed."""
    held = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = [str(p) for p in first] + [str(REPO)] + held
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **changes}
