"""Typed training configuration: dataclass sections, YAML files and dotted overrides.

A config file has the sections below (every key optional; unknown keys are errors):

    data, augment, pixmix, model, optim, train, eval, dist, demo

and may start with `extends: other.yaml` (a path relative to the file): the other recipe is
loaded first (recursively; a cycle is an error) and this file's keys override it.

Conventions:
- `train.batch_size` and `eval.batch_size` are GLOBAL (summed over ranks, the paper's 512);
  `per_rank_batch()` divides by the world size and refuses a remainder.
- Overrides are `section.key=value` strings; the value is parsed as a YAML scalar and checked
  against the field's type (an int is accepted for a float field; a float written without a dot,
  such as `5e-4`, which YAML 1.1 reads as text, is accepted for a float field too).
- Relative paths are relative to the working directory of the run.
- The resolved config is written as YAML next to the checkpoints (`save_config`), with a
  `provenance` section (git revision, library versions) that loading skips.
- `pixmix.enabled` (before `augment.method` existed) still loads: true means
  `augment.method=pixmix`, false `augment.method=baseline`, with a FutureWarning naming the new
  key; given together with an `augment.method` it contradicts, it is an error.
"""
from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import yaml

from dali_pixmix.augment.methods import METHOD_NAMES, method


@dataclass
class DataConfig:
    dataset: str = "imagenet"     # imagenet | cifar10 | cifar100 (CIFAR reads data.root)
    root: str = ""                # CIFAR: holds cifar-10-batches-py/ (or -bin/, cifar-100-*)
    train: str = ""               # training folder (one sub-folder per class, named by wnid)
    val: str = ""                 # validation folder, same class folders as data.train
    crop: int = 224               # random-resized-crop size for training
    val_resize: int = 256         # shorter side before the centre crop at evaluation
    val_crop: int = 224
    num_threads: int = 4          # DALI CPU threads per rank (GPU nodes: 6-8, docs/training.md)
    hw_decoder_load: float = 0.99  # share of the JPEGs for nvJPEG's hardware decoder (A100,
    #                                H100, H200; ignored on GPUs without one), in [0, 1]
    dtype: str = "float32"        # training loader output: float32 | float16
    check_headers: bool = True    # read every image header once at start-up: a file DALI cannot
                                  # parse stops the run with its name (instead of a crash)


@dataclass
class AugmentConfig:
    """The training augmentation on top of random-resized-crop + flip (docs/training.md)."""
    method: str = "pixmix"        # one of augment.methods.METHOD_NAMES
    mixup_alpha: float = 0.2      # mixup: lambda ~ Beta(alpha, alpha)
    cutmix_alpha: float = 1.0     # cutmix, pixmix_cutmix: lambda ~ Beta(alpha, alpha)
    cutout_fraction: float = 0.5  # cutout: side of the square as a fraction of data.crop
    augmix_width: int = 3         # augmix: augmentation chains mixed per image
    augmix_depth: int = -1        # augmix: ops per chain; -1 = uniform on 1..3
    augmix_severity: int = 1      # augmix: op levels ~ U(0.1, severity)
    augmix_alpha: float = 1.0     # augmix: chain weights ~ Dirichlet(alpha), m ~ Beta(alpha, alpha)
    augmix_all_ops: bool = True   # augmix: the 13 ops (false: the 9 without colour/contrast/...)


@dataclass
class PixMixConfig:
    """PixMix's hyper-parameters and mixing set (used by the pixmix* methods)."""
    mixing_set: str = ""          # folder, file list or .npy of mixing pictures
    #                               (or comma-separated folders/file lists: one bank)
    bank_cache: Optional[str] = None  # .npy cache for the decoded bank (built once)
    bank_size: int = 256          # stored side of each mixing picture (reference: Resize 256)
    bank_on_host: bool = False    # keep the bank in pinned host memory instead of on the GPU
    k: int = 4
    beta: float = 4.0
    severity: int = 1
    all_ops: bool = True
    strategy: str = "auto"        # how the stage runs (same result to float rounding): auto =
    #                               dense on a GPU, grouped on the CPU | grouped | dense
    cuda_graph: bool = False      # on a GPU with dense: replay the stage as a CUDA graph


@dataclass
class ModelConfig:
    arch: str = "resnet50"        # any torchvision classifier name
    pretrained: Optional[str] = None  # LOCAL torchvision-format checkpoint; None = from scratch
    compile: bool = False         # torch.compile the model
    channels_last: str = "auto"   # auto (on GPU) | true | false


@dataclass
class OptimConfig:
    lr: float = 0.01              # peak learning rate for the GLOBAL batch
    min_lr: float = 1e-6          # cosine end point, reached at the last iteration
    warmup_epochs: float = 0.0    # linear warm-up from 0 (the reference uses none)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    impl: str = "auto"            # auto = torch (PyTorch SGD, fused on GPU) | apex (FusedSGD)


@dataclass
class TrainConfig:
    epochs: int = 90
    batch_size: int = 512         # GLOBAL batch size
    seed: int = 0
    amp: str = "auto"             # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    output_dir: str = "runs/imagenet_pixmix"
    log_every: int = 50           # progress line every N steps
    checkpoint_minutes: float = 30.0  # also save mid-epoch when this much time has passed
    keep_checkpoints: int = 3     # number of step checkpoints kept (final.pt is separate)
    max_steps: Optional[int] = None   # stop (with a checkpoint) after this global step
    deterministic: bool = False   # torch deterministic algorithms (for reproducibility checks;
    #                               bit-exact on CPU, slower on GPUs: docs/training.md)
    debug_log: bool = False       # per-rank sample labels per step and final weight hashes
    tensorboard: bool = False     # write TensorBoard scalars (needs the optional tensorboard
    #                               package: pip install -e '.[tensorboard]'; an error without)


@dataclass
class EvalConfig:
    batch_size: int = 256         # GLOBAL batch size
    every_epochs: int = 1         # validate every N epochs (and always after the last one)
    calibration_bin_size: int = 100


@dataclass
class DistConfig:
    device: str = "auto"          # auto | cuda | cpu
    timeout_minutes: int = 30


@dataclass
class DemoConfig:
    """Generate a synthetic dataset and a fractal mixing set before training (the README demo)."""
    enabled: bool = False
    root: str = "demo_data"       # data.train/val and pixmix.mixing_set are pointed inside it
    num_classes: int = 10
    train_per_class: int = 40
    val_per_class: int = 10
    fractals: int = 64
    min_size: int = 64
    max_size: int = 160


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pixmix: PixMixConfig = field(default_factory=PixMixConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return dataclasses.asdict(self)


PROVENANCE_SECTION = "provenance"  # written by save_config, skipped when loading

_CHOICES = {
    ("data", "dataset"): ("imagenet", "cifar10", "cifar100"),
    ("data", "dtype"): ("float32", "float16"),
    ("augment", "method"): METHOD_NAMES,
    ("pixmix", "strategy"): ("auto", "grouped", "dense"),
    ("model", "channels_last"): ("auto", "true", "false"),
    ("optim", "impl"): ("auto", "torch", "apex"),
    ("train", "amp"): ("auto", "bf16", "fp16", "off"),
    ("dist", "device"): ("auto", "cuda", "cpu"),
}


def _field_types(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type `hint`; raises ValueError naming `where`."""
    if typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        hint = [h for h in typing.get_args(hint) if h is not type(None)][0]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    name = getattr(hint, "__name__", str(hint))
    raise ValueError(f"{where}: expected {name}, got {value!r} ({type(value).__name__})")


def _set_field(cfg: Config, dotted: str, value: Any, source: str, seen: Dict[str, tuple],
               raw: Optional[str] = None) -> None:
    """Type-check and set one key; `seen` records (value, source) of every key set so far,
    which `_resolve_legacy` reads."""
    if dotted in LEGACY_KEYS:
        seen[dotted] = (_convert(value, bool, f"{source}: key '{dotted}'"), source)
        return
    parts = dotted.split(".")
    sections = _field_types(Config)
    if len(parts) != 2 or parts[0] not in sections:
        raise ValueError(f"{source}: unknown key '{dotted}' (use section.key with section one of "
                         f"{', '.join(sections)})")
    section = getattr(cfg, parts[0])
    hints = _field_types(type(section))
    if parts[1] not in hints:
        raise ValueError(f"{source}: unknown key '{dotted}' (known keys in '{parts[0]}': "
                         f"{', '.join(hints)})")
    hint = hints[parts[1]]
    if raw is not None and hint in (str, Optional[str]) and not isinstance(value, str) \
            and value is not None:
        value = raw  # a command-line path like 123 or 1e5 stays text for a text field
    choices = _CHOICES.get(tuple(parts))
    if isinstance(value, bool) and choices and "true" in choices:
        value = "true" if value else "false"  # YAML reads `true` as a bool
    elif value is False and choices and "off" in choices:
        value = "off"  # YAML 1.1 reads an unquoted `off` as false
    value = _convert(value, hint, f"{source}: key '{dotted}'")
    if choices and value not in choices:
        raise ValueError(f"{source}: key '{dotted}' must be one of {', '.join(choices)}, "
                         f"got {value!r}")
    setattr(section, parts[1], value)
    seen[dotted] = (value, source)


# Keys of older configs, read into their replacement by `_resolve_legacy`.
LEGACY_KEYS = ("pixmix.enabled",)


def _resolve_legacy(cfg: Config, seen: Dict[str, tuple]) -> None:
    """`pixmix.enabled` -> `augment.method` (pixmix / baseline); an error when an explicit
    `augment.method` contradicts it."""
    if "pixmix.enabled" not in seen:
        return
    enabled, where = seen["pixmix.enabled"]
    if "augment.method" in seen:
        name, method_source = seen["augment.method"]
        if method(name).uses_pixmix != enabled:
            raise ValueError(f"{where}: key 'pixmix.enabled'={str(enabled).lower()} contradicts "
                             f"augment.method={name} ({method_source}); pixmix.enabled is "
                             "replaced by augment.method: remove it")
        return
    cfg.augment.method = "pixmix" if enabled else "baseline"
    warnings.warn(f"{where}: key 'pixmix.enabled' is deprecated; it was read as "
                  f"augment.method={cfg.augment.method} (set that key instead)", FutureWarning,
                  stacklevel=3)


def apply_dict(cfg: Config, data: Dict[str, Any], source: str,
               seen: Dict[str, tuple]) -> Config:
    """Write a nested {section: {key: value}} mapping into `cfg` with type checks; `seen`
    collects the keys set (see `_set_field`; `load_config` resolves legacy keys from it)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if values is None or section in (PROVENANCE_SECTION, EXTENDS_KEY):
            continue  # a record of the past run / read by `recipe_chain`
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section '{section}' must be a mapping of keys")
        for key, value in values.items():
            _set_field(cfg, f"{section}.{key}", value, source, seen)
    return cfg


EXTENDS_KEY = "extends"


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (pass --config "
                                "configs/<recipe>.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                         f"offset {err.start}); save the file as UTF-8") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def recipe_chain(path: str | Path) -> List[tuple]:
    """[(mapping, path), ...] from the root recipe of `path`'s `extends:` chain to `path`.

    `extends:` names another YAML file relative to the extending file's folder."""
    chain, visited = [], []
    path = Path(path)
    while True:
        resolved = path.resolve()
        if resolved in visited:
            cycle = " -> ".join(str(p) for p in [*visited, resolved])
            raise ValueError(f"{path}: 'extends' makes a cycle ({cycle})")
        visited.append(resolved)
        data = _read_yaml(path)
        chain.append((data, path))
        parent = data.get(EXTENDS_KEY)
        if parent is None:
            return chain[::-1]
        if not isinstance(parent, str) or not parent:
            raise ValueError(f"{path}: '{EXTENDS_KEY}' must be the path of another recipe, "
                             f"got {parent!r}")
        path = path.parent / parent
        if not path.is_file():
            raise FileNotFoundError(f"{chain[-1][1]}: extends {parent}, but {path} does not "
                                    "exist")


def parse_override(text: str) -> tuple:
    """'section.key=value' -> (dotted key, YAML-parsed value, raw text)."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected section.key=value, e.g. optim.lr=0.02")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)):
        raise ValueError(f"--set {text!r}: the value must be a single scalar")
    return key.strip(), value, raw


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file at `path` (after the recipes it extends), then `--set`
    overrides, all type-checked."""
    cfg, seen = Config(), {}
    if path is not None:
        for data, source in recipe_chain(path):
            apply_dict(cfg, data, str(source), seen)
    for text in overrides:
        key, value, raw = parse_override(text)
        _set_field(cfg, key, value, f"--set {text}", seen, raw=raw)
    _resolve_legacy(cfg, seen)
    validate(cfg)
    return cfg


def _check_finite(cfg: Config) -> None:
    """No float setting may be NaN or infinite (every comparison with NaN is False, so range
    checks alone would let it through)."""
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        for item in dataclasses.fields(values):
            value = getattr(values, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"config key '{section.name}.{item.name}' must be a finite "
                                 f"number, got {value}")


def validate(cfg: Config) -> None:
    """Range checks that need more than a type (before any data or GPU work)."""
    _check_finite(cfg)
    positive = {"train.epochs": cfg.train.epochs, "train.batch_size": cfg.train.batch_size,
                "eval.batch_size": cfg.eval.batch_size, "data.crop": cfg.data.crop,
                "data.val_resize": cfg.data.val_resize, "data.val_crop": cfg.data.val_crop,
                "data.num_threads": cfg.data.num_threads, "pixmix.bank_size": cfg.pixmix.bank_size,
                "train.log_every": cfg.train.log_every, "optim.lr": cfg.optim.lr,
                "train.keep_checkpoints": cfg.train.keep_checkpoints,
                "eval.every_epochs": cfg.eval.every_epochs}
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"config key '{key}' must be positive, got {value}")
    if cfg.data.val_crop > cfg.data.val_resize:
        raise ValueError(f"config key 'data.val_crop'={cfg.data.val_crop} is larger than "
                         f"'data.val_resize'={cfg.data.val_resize}: the centre crop must fit "
                         "in the resized picture")
    if not 0 <= cfg.data.hw_decoder_load <= 1:
        raise ValueError(f"config key 'data.hw_decoder_load' must lie in [0, 1], got "
                         f"{cfg.data.hw_decoder_load}")
    if cfg.pixmix.cuda_graph and cfg.pixmix.strategy == "grouped":
        raise ValueError("config key 'pixmix.cuda_graph'=true needs pixmix.strategy dense (or "
                         "auto, dense on a GPU): the grouped strategy's kernels depend on the "
                         "draws, so no graph can replay them")
    if not 0 <= cfg.pixmix.k:
        raise ValueError(f"config key 'pixmix.k' must be >= 0, got {cfg.pixmix.k}")
    if cfg.optim.min_lr < 0 or cfg.optim.min_lr > cfg.optim.lr:
        raise ValueError(f"config key 'optim.min_lr' must lie in [0, optim.lr], got "
                         f"{cfg.optim.min_lr}")
    if cfg.data.dtype == "float16" and cfg.train.amp == "off":
        raise ValueError("config key 'data.dtype'=float16 needs mixed precision: set train.amp to "
                         "bf16 or fp16 (or auto on a GPU), or data.dtype=float32")
    if cfg.train.max_steps is not None and cfg.train.max_steps <= 0:
        raise ValueError(f"config key 'train.max_steps' must be positive, got "
                         f"{cfg.train.max_steps}")
    validate_augment(cfg)
    validate_ranges(cfg)
    validate_dataset(cfg)


def validate_augment(cfg: Config) -> None:
    """Ranges of the augmentation hyper-parameters."""
    aug = cfg.augment
    checks = [("augment.mixup_alpha", aug.mixup_alpha > 0, "> 0"),
              ("augment.cutmix_alpha", aug.cutmix_alpha > 0, "> 0"),
              ("augment.cutout_fraction", 0 < aug.cutout_fraction <= 1, "in (0, 1]"),
              ("augment.augmix_width", aug.augmix_width >= 1, ">= 1"),
              ("augment.augmix_depth", aug.augmix_depth == -1 or aug.augmix_depth >= 1,
               "-1 (uniform on 1..3) or >= 1"),
              ("augment.augmix_severity", 1 <= aug.augmix_severity <= MAX_SEVERITY,
               f"in 1..{MAX_SEVERITY} (the ops' level scale)"),
              ("augment.augmix_alpha", aug.augmix_alpha > 0, "> 0")]
    check_rules(cfg, checks)


# CIFAR pictures are 32 x 32; the reference trains on RandomCrop(32, padding=4) of them.
CIFAR_CROP = 32


def validate_dataset(cfg: Config) -> None:
    """The keys that name the data must fit `data.dataset`: ImageNet reads the folders
    data.train and data.val, CIFAR reads data.root (its train and test splits) at 32 px."""
    data = cfg.data
    if data.dataset == "imagenet":
        if data.root:
            raise ValueError(f"config key 'data.root'={data.root!r} is read for CIFAR only; set "
                             "data.dataset to cifar10 or cifar100, or (ImageNet) leave data.root "
                             "empty and set data.train and data.val")
        return
    given = [key for key in ("train", "val") if getattr(data, key)]
    if given:
        raise ValueError(f"config key 'data.{given[0]}' is an ImageNet folder, but data.dataset="
                         f"{data.dataset} reads its train and test splits from data.root; leave "
                         f"data.train and data.val empty")
    if data.crop != CIFAR_CROP:
        raise ValueError(f"config key 'data.crop' must be {CIFAR_CROP} for data.dataset="
                         f"{data.dataset} (RandomCrop({CIFAR_CROP}, padding=4) of the 32 px "
                         f"pictures), got {data.crop}")


MAX_SEVERITY = 10  # the ops' level scale (the reference's PARAMETER_MAX): higher breaks some ops
MAX_SEED = 2**31 - 1  # DALI reads a negative seed as "random"; numpy refuses negative keys


def validate_ranges(cfg: Config) -> None:
    """Ranges of the numeric keys that `validate` and `validate_augment` leave: every value
    that would otherwise fail later (in the first batch, after an epoch) or silently mean
    something else, named by its key."""
    pix, opt, train, demo = cfg.pixmix, cfg.optim, cfg.train, cfg.demo
    checks = [("pixmix.beta", pix.beta > 0, "> 0 (mixing weights ~ Beta(beta, 1))"),
              ("pixmix.severity", 1 <= pix.severity <= MAX_SEVERITY,
               f"in 1..{MAX_SEVERITY} (the ops' level scale)"),
              ("optim.momentum", 0 <= opt.momentum < 1, "in [0, 1)"),
              ("optim.weight_decay", opt.weight_decay >= 0, ">= 0"),
              ("optim.warmup_epochs", 0 <= opt.warmup_epochs <= train.epochs,
               f"in [0, train.epochs={train.epochs}]"),
              ("train.seed", 0 <= train.seed <= MAX_SEED, f"in 0..{MAX_SEED}"),
              ("train.checkpoint_minutes", train.checkpoint_minutes >= 0,
               ">= 0 (0: a checkpoint at every step)"),
              ("eval.calibration_bin_size", cfg.eval.calibration_bin_size >= 1,
               ">= 1 (images per adaptive bin)"),
              ("dist.timeout_minutes", cfg.dist.timeout_minutes > 0, "> 0"),
              ("demo.num_classes", demo.num_classes >= 1, ">= 1"),
              ("demo.train_per_class", demo.train_per_class >= 1, ">= 1"),
              ("demo.val_per_class", demo.val_per_class >= 1, ">= 1"),
              ("demo.fractals", demo.fractals >= 1, ">= 1"),
              ("demo.min_size", demo.min_size >= 8, ">= 8 (px)"),
              ("demo.max_size", demo.max_size >= demo.min_size,
               f">= demo.min_size={demo.min_size}")]
    check_rules(cfg, checks)
    if opt.nesterov and opt.momentum == 0:
        raise ValueError("config key 'optim.momentum' must be > 0 with optim.nesterov=true "
                         "(Nesterov momentum needs a momentum); set it or optim.nesterov=false")


def check_rules(cfg: Config, checks) -> None:
    """A ValueError for the first (`section.key`, holds, rule) of `checks` that does not hold,
    naming the key, the rule and the value."""
    for key, ok, rule in checks:
        if not ok:
            section, name = key.split(".")
            raise ValueError(f"config key '{key}' must be {rule}, got "
                             f"{getattr(getattr(cfg, section), name)}")


def per_rank_batch(global_batch: int, world_size: int, key: str = "train.batch_size") -> int:
    """Per-rank batch for a GLOBAL batch size; errors when it does not divide evenly.

    `key` names the setting in the message: a config key, or a command-line flag ("--...").
    """
    if global_batch % world_size:
        name = key if key.startswith("--") else f"config key '{key}'"
        raise ValueError(f"{name}={global_batch} is the GLOBAL batch (summed over ranks) and must "
                         f"be divisible by the world size {world_size}")
    return global_batch // world_size


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (loadable again with `load_config`), followed by a
    `provenance` section: the git revision and library versions of this process."""
    from dali_pixmix.provenance import provenance

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from dali_pixmix.oserrors import names_file

    data = {**cfg.to_dict(), PROVENANCE_SECTION: provenance()}
    with names_file(path):
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
