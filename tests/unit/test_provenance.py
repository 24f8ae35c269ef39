"""The software record: git revision and library versions, computed once per process."""
import platform
import subprocess

import numpy as np
import pytest
import torch

from dali_pixmix import provenance as prov

pytestmark = pytest.mark.unit


def test_versions_are_the_running_libraries():
    info = prov.provenance()
    assert info["python"] == platform.python_version()
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    from nvidia.dali import __version__ as dali_version
    assert info["dali"] == dali_version
    assert prov.provenance() is info  # computed once per process


def test_revision_of_a_source_checkout(monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=prov.PACKAGE_DIR,
                          capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not running from a git checkout")
    assert prov.git_revision().split("+")[0] == head.stdout.strip()


def test_revision_is_unknown_outside_our_own_checkout(tmp_path, monkeypatch):
    # a pip-installed copy, outside any repository ...
    alone = tmp_path / "site" / "dali_pixmix"
    alone.mkdir(parents=True)
    monkeypatch.setattr(prov, "PACKAGE_DIR", alone)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert prov.git_revision() == "unknown"
    # ... or inside someone else's repository (e.g. a virtualenv in a project folder)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.delenv("GIT_CEILING_DIRECTORIES")
    nested = tmp_path / "venv" / "site-packages" / "dali_pixmix"
    nested.mkdir(parents=True)
    monkeypatch.setattr(prov, "PACKAGE_DIR", nested)
    assert prov.git_revision() == "unknown"
    # ... or with no git at all
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))
    assert prov.git_revision() == "unknown"
