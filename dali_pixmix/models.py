"""Classifier construction and loading from a checkpoint (ours or torchvision's format).

The checkpoint format and its reader live in `dali_pixmix.checkpoint`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torchvision

from dali_pixmix.checkpoint import checkpoint_identity, read_checkpoint
from dali_pixmix.classes import imagenet_wnids
from dali_pixmix.wide_resnet import parse_wide_resnet, wide_resnet, wide_resnet_name


def build_model(arch: str, num_classes: int) -> torch.nn.Module:
    """A classifier by name with `num_classes` outputs: a torchvision one (resnet50, resnet18,
    ...) or a Wide ResNet `wrn<depth>_<width>` (wrn40_4, wrn28_10; dropout 0.3)."""
    if parse_wide_resnet(arch) is not None:
        return wide_resnet(arch, num_classes)
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown model '{arch}': use a torchvision classifier name such as "
                         "resnet50 or resnet18, or a Wide ResNet such as wrn40_4")
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def clean_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip the prefixes DDP ('module.') and torch.compile ('_orig_mod.') add to keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def classifier_head_size(state: Dict[str, torch.Tensor]) -> int:
    """Number of classes of a state_dict, read from its last 2-D weight (fc / classifier)."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not weights:
        raise ValueError("state_dict has no linear classifier weight")
    return int(weights[-1].shape[0])


def checkpoint_arch(ckpt: Dict, arch: Optional[str] = None) -> str:
    """`arch` when given, else the architecture stored in the checkpoint, else resnet50."""
    return arch or ckpt.get("arch") or "resnet50"


def load_classifier(path: str | Path, arch: Optional[str] = None,
                    device: torch.device | str = "cpu") -> Tuple[torch.nn.Module, List[str]]:
    """(model in eval mode on `device`, class wnids) from our checkpoint or a torchvision one."""
    return classifier_from_checkpoint(read_checkpoint(path), path, arch, device)


def classifier_from_checkpoint(ckpt: Dict, path: str | Path, arch: Optional[str] = None,
                               device: torch.device | str = "cpu"
                               ) -> Tuple[torch.nn.Module, List[str]]:
    """`load_classifier` for a checkpoint already read (`read_checkpoint`) from `path`."""
    state = clean_state_dict(ckpt["model"])
    arch = checkpoint_arch(ckpt, arch)
    num_classes = classifier_head_size(state)
    classes = list(ckpt.get("classes") or [])
    if not classes:
        if num_classes != 1000:
            raise ValueError(f"{path}: {num_classes}-class checkpoint without a class list; "
                             "save it with dali-pixmix training or use a 1000-class model")
        classes = list(imagenet_wnids())
    if len(classes) != num_classes:
        raise ValueError(f"{path}: class list has {len(classes)} entries but the head has "
                         f"{num_classes} outputs")
    model = build_model(arch, num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ValueError(arch_mismatch(path, ckpt, state, arch, model)) from None
    return model.to(device).eval(), classes


def arch_mismatch(path, ckpt: Dict, state: Dict[str, torch.Tensor], arch: str,
                  model: torch.nn.Module) -> str:
    """One short line for weights that do not fit `arch`: the architecture the checkpoint
    records or, failing that, the one its tensors match (never the list of every key)."""
    held = ckpt.get("arch") if ckpt.get("arch") != arch else None
    held = held or guess_arch(state, classifier_head_size(state), first=arch)
    if held and held != arch:
        fix = ("or leave --arch out to use the checkpoint's own" if ckpt.get("arch") else
               "(the file does not record its architecture)")
        return f"{path} holds a {held}, not a {arch}: pass --arch {held} {fix}"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    parts = [f"{len(names)} {what} (e.g. {names[0]})" for what, names in
             (("missing", missing), ("unexpected", extra), ("of another shape", shapes)) if names]
    return (f"{path} does not fit a {arch} (tensors {', '.join(parts)}) nor any other "
            "torchvision classifier: a damaged or foreign checkpoint; pass another file")


def guess_arch(state: Dict[str, torch.Tensor], num_classes: int,
               first: Optional[str] = None) -> Optional[str]:
    """The Wide ResNet (`wrn<depth>_<width>`) or torchvision classifier whose parameters and
    buffers have exactly the names and shapes of `state` (None if none has). Models are built
    on the meta device (no memory, no initialisation); those of `first`'s family (its name's
    leading letters) are tried first."""
    import re
    import warnings

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    wide = wide_resnet_name(shapes)
    if wide is not None:
        return wide
    names = torchvision.models.list_models(module=torchvision.models)
    family = re.match(r"[a-z]*", first or "").group(0)
    for name in sorted(names, key=lambda n: not (family and n.startswith(family))):
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                candidate = torchvision.models.get_model(name, weights=None,
                                                         num_classes=num_classes)
        except Exception:  # noqa: BLE001 - a few models cannot be built on meta (regnet)
            continue
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return name
    return None


def load_fvis_model(checkpoint, arch: Optional[str] = None,
                    device="cpu") -> Tuple[torch.nn.Module, str]:
    """(classifier of `checkpoint`, frozen, in eval mode; its architecture name).

    Reads our checkpoints and torchvision state_dicts (the file once); `arch` defaults to the
    checkpoint's own, else resnet50. A state_dict that does not fit the architecture is a
    one-line error naming the file (`classifier_from_checkpoint`).
    """
    return load_fvis_checkpoint(checkpoint, arch, device)[:2]


def load_fvis_checkpoint(checkpoint, arch: Optional[str] = None,
                         device="cpu") -> Tuple[torch.nn.Module, str, str]:
    """`load_fvis_model` plus the identity of the checkpoint's weights
    (`checkpoint.checkpoint_identity`), from one read of the file."""
    model, _classes, arch, identity = checkpoint_model(read_checkpoint(checkpoint), checkpoint,
                                                       arch, device)
    return model.requires_grad_(False), arch, identity


def checkpoint_model(ckpt: Dict, path: str | Path, arch: Optional[str] = None,
                     device: torch.device | str = "cpu"
                     ) -> Tuple[torch.nn.Module, List[str], str, str]:
    """(classifier in eval mode, its classes, its architecture, its weights' identity
    (`checkpoint.checkpoint_identity`)) of a checkpoint already read from `path`."""
    arch = checkpoint_arch(ckpt, arch)
    model, classes = classifier_from_checkpoint(ckpt, path, arch, device)
    return model, classes, arch, checkpoint_identity(ckpt)


def load_pretrained_backbone(model: torch.nn.Module, path: str | Path) -> List[str]:
    """Initialise `model` from a local checkpoint, skipping a classifier head of another size.

    Returns the names of parameters left at their fresh initialisation (the replaced head).
    """
    state = clean_state_dict(read_checkpoint(path)["model"])
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(f"{path} does not match the model: unexpected keys {unexpected[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return sorted(set(skipped) | set(missing))


def class_index_mask(model_classes: Sequence[str], subset: Sequence[str]) -> torch.Tensor:
    """Indices of `subset` wnids in the model's class list (ImageNet-R/A masks); errors on gaps."""
    position = {w: i for i, w in enumerate(model_classes)}
    unknown = [w for w in subset if w not in position]
    if unknown:
        raise ValueError(f"{len(unknown)} class folders are not in the model's class list "
                         f"(e.g. {unknown[:3]}); the dataset and checkpoint disagree")
    return torch.tensor([position[w] for w in subset], dtype=torch.long)
