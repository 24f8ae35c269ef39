"""The docker image's pinned versions (docker/requirements.txt): what its scripts run with."""
import re
from pathlib import Path
from typing import Optional

import torch

REQUIREMENTS = Path(__file__).resolve().parents[1] / "docker" / "requirements.txt"


def pinned(package: str) -> str:
    found = re.search(rf"^{re.escape(package)}==(\S+)$", REQUIREMENTS.read_text(), re.M)
    assert found, f"{package} is not pinned in {REQUIREMENTS}"
    return found.group(1)


def other_torch_than_the_images() -> Optional[str]:
    """None when this is the image's torch; else why the scripts' torchrun flags (those of the
    image's torchrun, e.g. --shutdown-timeout) cannot be checked with this one."""
    here, image = torch.__version__.split("+")[0], pinned("torch")
    if here == image:
        return None
    return f"the docker scripts' torchrun flags are those of the image's torch {image}; " \
           f"this is torch {here}"
