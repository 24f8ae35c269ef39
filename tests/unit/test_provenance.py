"""The software record: git revision and library versions, computed once per process."""
import fnmatch
import platform
import subprocess
from pathlib import Path

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


def test_an_image_without_git_reads_the_revision_baked_in_at_build_time(tmp_path, monkeypatch):
    """docker/Dockerfile writes GIT_REVISION into the package (.git is not in the image)."""
    installed = tmp_path / "site" / "dali_pixmix"
    (installed / "assets").mkdir(parents=True)
    monkeypatch.setattr(prov, "PACKAGE_DIR", installed)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert prov.git_revision() == "unknown"  # no file: nothing baked in
    (installed / prov.BAKED_REVISION).write_text("0123abcd" * 5 + "+dirty\n")
    assert prov.git_revision() == "0123abcd" * 5 + "+dirty"
    (installed / prov.BAKED_REVISION).write_text("unknown\n")  # built without the argument
    assert prov.git_revision() == "unknown"


def test_the_dockerfile_bakes_the_revision_where_provenance_reads_it():
    """The build argument reaches the file provenance reads, inside the installed package
    (setup.py's package data), and the image's label; git never tracks the file."""
    root = Path(prov.__file__).resolve().parents[1]
    docker = (root / "docker" / "Dockerfile").read_text()
    target = f"dali_pixmix/{prov.BAKED_REVISION.as_posix()}"
    assert "ARG GIT_REVISION=unknown" in docker
    assert 'LABEL org.opencontainers.image.revision="${GIT_REVISION}"' in docker
    write = docker.index(f'echo "${{GIT_REVISION}}" > {target}')
    assert write < docker.index("pip install --no-deps .")  # packaged with the install
    assert fnmatch.fnmatch(prov.BAKED_REVISION.as_posix(), "assets/*.txt")
    assert '"assets/*.txt"' in (root / "setup.py").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", target], cwd=root)
    if ignored.returncode == 128:
        pytest.skip("not running from a git checkout")
    assert ignored.returncode == 0, f"{target} must be git-ignored (generated)"
