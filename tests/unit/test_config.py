"""Config: YAML loading, dotted overrides, type and key errors, global batch, round trip."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from child_env import child_env

from dali_pixmix.augment.methods import METHOD_NAMES
from dali_pixmix.config import Config, load_config, per_rank_batch, save_config
from dali_pixmix.provenance import provenance

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_values_and_overrides(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.1\n  weight_decay: 5e-4\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["optim.lr=0.02", "train.amp=bf16", "model.pretrained=null",
                             "data.train=123"])
    assert cfg.optim.lr == 0.02 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == 5e-4  # YAML 1.1 reads 5e-4 as text; accepted for floats
    assert cfg.train.epochs == 3 and cfg.train.amp == "bf16"
    assert cfg.model.pretrained is None
    assert cfg.data.train == "123"  # a text field keeps the raw command-line text


def test_int_accepted_for_float_but_not_the_reverse(tmp_path):
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ValueError, match=r"train.epochs.*expected int.*2.5"):
        load_config(None, ["train.epochs=2.5"])
    with pytest.raises(ValueError, match="expected bool"):
        load_config(None, ["pixmix.all_ops=maybe"])
    with pytest.raises(ValueError, match="expected int"):
        load_config(None, ["train.epochs=true"])


@pytest.mark.parametrize("text,pattern", [
    ("optim:\n  lrr: 0.1\n", r"c.yaml: unknown key 'optim.lrr'"),
    ("optimizer:\n  lr: 0.1\n", r"c.yaml: unknown key 'optimizer.lr'"),
    ("train:\n  epochs: ten\n", r"c.yaml: key 'train.epochs': expected int"),
    ("train:\n  amp: fp8\n", r"c.yaml: key 'train.amp' must be one of"),
    ("train: [1, 2]\n", r"section 'train' must be a mapping"),
    ("train:\n  epochs: 0\n", r"train.epochs' must be positive"),
    ("data:\n  dtype: float16\ntrain:\n  amp: \"off\"\n", r"float16 needs mixed precision"),
])
def test_file_errors_name_key_and_file(tmp_path, text, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_config(write(tmp_path, text))


def test_override_errors():
    with pytest.raises(ValueError, match="unknown key 'optim.nope'"):
        load_config(None, ["optim.nope=1"])
    with pytest.raises(ValueError, match="expected section.key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("does/not/exist.yaml")


def test_channels_last_and_amp_accept_yaml_bools(tmp_path):
    cfg = load_config(write(tmp_path, "model:\n  channels_last: true\ntrain:\n  amp: off\n"))
    assert cfg.model.channels_last == "true" and cfg.train.amp == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"


def test_global_batch_split():
    assert per_rank_batch(512, 8) == 64
    with pytest.raises(ValueError, match="GLOBAL batch.*divisible by the world size 3"):
        per_rank_batch(512, 3)


def test_saved_config_round_trips_and_records_the_software(tmp_path):
    cfg = load_config(None, ["optim.lr=0.5", "train.max_steps=7", "pixmix.bank_cache=x.npy"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(path)
    assert again == cfg and again != Config()
    assert yaml.safe_load(path.read_text())["provenance"] == provenance()


def test_recipes_match_the_paper():
    """The shipped recipes load and carry the published ImageNet hyper-parameters; the method
    recipes differ from the PixMix one only in their augmentation and output folder."""
    pix = load_config(REPO / "configs" / "imagenet_pixmix.yaml")
    assert (pix.model.arch, pix.train.epochs, pix.train.batch_size) == ("resnet50", 90, 512)
    assert (pix.optim.lr, pix.optim.min_lr, pix.optim.momentum) == (0.01, 1e-6, 0.9)
    assert pix.optim.nesterov and pix.optim.weight_decay == 5e-4
    assert (pix.pixmix.k, pix.pixmix.beta, pix.pixmix.severity) == (4, 4.0, 1)
    assert pix.augment.method == "pixmix" and pix.pixmix.all_ops and pix.model.pretrained
    for name in METHOD_NAMES:
        cfg = load_config(REPO / "configs" / f"imagenet_{name}.yaml")
        assert cfg.augment.method == name
        assert cfg.train.output_dir == f"runs/imagenet_{name}"
        cfg.augment, cfg.train.output_dir = pix.augment, pix.train.output_dir
        assert cfg == pix, name  # identical apart from the augmentation and the output folder
    aug = load_config(REPO / "configs" / "imagenet_augmix.yaml").augment
    assert (aug.augmix_width, aug.augmix_depth, aug.augmix_severity, aug.augmix_alpha,
            aug.augmix_all_ops) == (3, -1, 1, 1.0, True)
    assert load_config(REPO / "configs" / "imagenet_mixup.yaml").augment.mixup_alpha == 0.2
    assert load_config(REPO / "configs" / "imagenet_cutmix.yaml").augment.cutmix_alpha == 1.0
    assert load_config(REPO / "configs" / "imagenet_cutout.yaml").augment.cutout_fraction == 0.5
    demo = load_config(REPO / "configs" / "demo.yaml")
    assert demo.demo.enabled and demo.augment.method == "pixmix"


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "'optim.lr' must be a finite number, got nan"),
    ("optim.weight_decay=.inf", "'optim.weight_decay' must be a finite number, got inf"),
    ("data.val_crop=300", "'data.val_crop'=300 is larger than 'data.val_resize'=256"),
    ("pixmix.bank_size=0", "'pixmix.bank_size' must be positive"),
    ("pixmix.strategy=fast", "'pixmix.strategy' must be one of auto, grouped, dense"),
])
def test_values_no_run_can_use_are_refused(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [override])


def test_a_cuda_graph_needs_the_dense_strategy():
    with pytest.raises(ValueError, match="'pixmix.cuda_graph'=true needs pixmix.strategy dense"):
        load_config(None, ["pixmix.strategy=grouped", "pixmix.cuda_graph=true"])
    for strategy in ("auto", "dense"):
        cfg = load_config(None, [f"pixmix.strategy={strategy}", "pixmix.cuda_graph=true"])
        assert (cfg.pixmix.strategy, cfg.pixmix.cuda_graph) == (strategy, True)


def test_non_utf8_config_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("optim:\n  lr: 0.1  # d\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not UTF-8 text \(byte 0xe9"):
        load_config(path)


def test_extends_loads_the_base_first_relative_and_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("optim:\n  lr: 0.5\n  momentum: 0.8\ntrain:\n  epochs: 7\n")
    (tmp_path / "sub" / "mid.yaml").write_text("extends: ../root.yaml\noptim:\n  lr: 0.25\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("extends: mid.yaml\ntrain:\n  epochs: 3\n")
    cfg = load_config(tmp_path / "sub" / "leaf.yaml", ["optim.momentum=0.7"])
    assert (cfg.optim.lr, cfg.train.epochs, cfg.optim.momentum) == (0.25, 3, 0.7)
    mid = load_config(tmp_path / "sub" / "mid.yaml")
    assert (mid.optim.lr, mid.optim.momentum, mid.train.epochs) == (0.25, 0.8, 7)


@pytest.mark.parametrize("files, pattern", [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, r"'extends' makes a cycle"),
    ({"a.yaml": "extends: a.yaml\n"}, r"'extends' makes a cycle"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "optim:\n  lrr: 1\n"},
     r"b.yaml: unknown key 'optim.lrr'"),
    ({"a.yaml": "extends: [b.yaml]\n"}, r"'extends' must be the path of another recipe"),
])
def test_extends_errors(tmp_path, files, pattern):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=pattern):
        load_config(tmp_path / "a.yaml")


def test_extends_a_missing_file_names_both(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"a.yaml: extends nowhere.yaml, but .* not exist"):
        load_config(tmp_path / "a.yaml")


def test_legacy_pixmix_enabled_maps_to_the_method_with_a_warning(tmp_path):
    with pytest.warns(FutureWarning, match=r"'pixmix.enabled' is deprecated.*augment.method="
                                           r"baseline"):
        assert load_config(None, ["pixmix.enabled=false"]).augment.method == "baseline"
    with pytest.warns(FutureWarning, match="augment.method=pixmix"):
        cfg = load_config(write(tmp_path, "pixmix:\n  enabled: true\n  k: 3\n"))
    assert cfg.augment.method == "pixmix" and cfg.pixmix.k == 3
    # consistent with an explicit method: accepted, nothing to warn about
    assert load_config(None, ["augment.method=cutmix", "pixmix.enabled=false"]).augment.method \
        == "cutmix"
    assert load_config(None, ["pixmix.enabled=true", "augment.method=pixmix_cutmix"]) \
        .augment.method == "pixmix_cutmix"
    with pytest.raises(ValueError, match=r"'pixmix.enabled'=true contradicts augment.method="
                                         r"mixup.*remove it"):
        load_config(None, ["augment.method=mixup", "pixmix.enabled=true"])
    with pytest.raises(ValueError, match="contradicts augment.method=pixmix"):
        load_config(write(tmp_path, "pixmix:\n  enabled: false\naugment:\n  method: pixmix\n"))
    with pytest.raises(ValueError, match="expected bool"):
        load_config(None, ["pixmix.enabled=maybe"])
    assert "enabled" not in Config().to_dict()["pixmix"]  # not written to new configs


@pytest.mark.parametrize("override, pattern", [
    ("augment.method=randaugment", r"'augment.method' must be one of baseline, cutout, mixup"),
    ("augment.mixup_alpha=0", r"'augment.mixup_alpha' must be > 0"),
    ("augment.cutout_fraction=1.5", r"'augment.cutout_fraction' must be in \(0, 1\]"),
    ("augment.augmix_depth=0", r"'augment.augmix_depth' must be -1"),
    ("augment.augmix_width=0", r"'augment.augmix_width' must be >= 1"),
])
def test_augment_values_are_checked(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize("override, pattern", [
    ("pixmix.beta=0", r"'pixmix.beta' must be > 0 .*got 0.0"),
    ("pixmix.beta=-1", r"'pixmix.beta' must be > 0"),
    ("pixmix.severity=-1", r"'pixmix.severity' must be in 1..10 .*got -1"),
    ("pixmix.severity=0", r"'pixmix.severity' must be in 1..10"),
    ("pixmix.severity=11", r"'pixmix.severity' must be in 1..10"),
    ("augment.augmix_severity=11", r"'augment.augmix_severity' must be in 1..10"),
    ("optim.momentum=-5", r"'optim.momentum' must be in \[0, 1\), got -5.0"),
    ("optim.momentum=1", r"'optim.momentum' must be in \[0, 1\)"),
    ("optim.momentum=0", r"'optim.momentum' must be > 0 with optim.nesterov=true"),
    ("optim.weight_decay=-1e-4", r"'optim.weight_decay' must be >= 0"),
    ("optim.warmup_epochs=-1", r"'optim.warmup_epochs' must be in \[0, train.epochs=90\]"),
    ("optim.warmup_epochs=91", r"'optim.warmup_epochs' must be in \[0, train.epochs=90\]"),
    ("train.seed=-1", r"'train.seed' must be in 0..2147483647, got -1"),
    ("train.checkpoint_minutes=-1", r"'train.checkpoint_minutes' must be >= 0"),
    ("dist.timeout_minutes=0", r"'dist.timeout_minutes' must be > 0"),
    ("eval.calibration_bin_size=0", r"'eval.calibration_bin_size' must be >= 1"),
    ("demo.min_size=4", r"'demo.min_size' must be >= 8"),
    ("demo.max_size=32", r"'demo.max_size' must be >= demo.min_size=64"),
    ("demo.val_per_class=0", r"'demo.val_per_class' must be >= 1"),
])
def test_every_numeric_key_is_range_checked_at_load(override, pattern):
    """Out-of-range values are refused when the config is loaded, naming the key (before,
    pixmix.beta=0 failed in the first batch as a DALI decode failure, and
    eval.calibration_bin_size=0 only after a whole epoch)."""
    with pytest.raises(ValueError, match=pattern):
        load_config(None, [override])


def test_print_config_refuses_an_out_of_range_key(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "train_imagenet.py"), "--config",
                           str(REPO / "configs" / "demo.yaml"), "--set", "pixmix.beta=0",
                           "--print-config"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: config key 'pixmix.beta' must be > 0 (mixing weights ~ Beta(beta, 1)), got 0.0"]


def test_print_config_shows_the_resolved_recipe_and_trains_nothing(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "train_imagenet.py"), "--config",
                           str(REPO / "configs" / "imagenet_pixmix.yaml"), "--set",
                           "optim.lr=0.02", "--set", f"train.output_dir={tmp_path / 'run'}",
                           "--print-config"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert done.returncode == 0, done.stderr
    printed = tmp_path / "printed.yaml"
    printed.write_text(done.stdout)
    expected = load_config(REPO / "configs" / "imagenet_pixmix.yaml",
                           ["optim.lr=0.02", f"train.output_dir={tmp_path / 'run'}"])
    assert load_config(printed) == expected  # every key, extends: resolved
    assert "extends" not in done.stdout and expected.augment.method == "pixmix"
    assert not (tmp_path / "run").exists()
