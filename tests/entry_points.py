"""The entry-point scripts (train_imagenet.py, eval/, tools/) as modules, to call `main` in the
test process: no interpreter start per call."""
import importlib.util

from child_env import REPO


def load_script(relative: str):
    """`REPO/relative` (e.g. "eval/compare.py") imported as a fresh module."""
    spec = importlib.util.spec_from_file_location(
        "script_" + relative.replace("/", "_").removesuffix(".py"), REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
