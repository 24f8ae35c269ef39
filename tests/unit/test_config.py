"""Config: YAML loading, dotted overrides, type and key errors, global batch, round trip."""
import re
from pathlib import Path

import pytest
import yaml

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
        load_config(None, ["pixmix.enabled=maybe"])
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
    """The shipped recipes load and carry the published ImageNet hyper-parameters."""
    pix = load_config(REPO / "configs" / "imagenet_pixmix.yaml")
    base = load_config(REPO / "configs" / "imagenet_baseline.yaml")
    assert (pix.model.arch, pix.train.epochs, pix.train.batch_size) == ("resnet50", 90, 512)
    assert (pix.optim.lr, pix.optim.min_lr, pix.optim.momentum) == (0.01, 1e-6, 0.9)
    assert pix.optim.nesterov and pix.optim.weight_decay == 5e-4
    assert (pix.pixmix.k, pix.pixmix.beta, pix.pixmix.severity) == (4, 4.0, 1)
    assert pix.pixmix.enabled and pix.pixmix.all_ops and pix.model.pretrained
    assert not base.pixmix.enabled
    base.pixmix.enabled = True
    base.train.output_dir = pix.train.output_dir
    assert base == pix  # identical apart from PixMix and the output folder
    demo = load_config(REPO / "configs" / "demo.yaml")
    assert demo.demo.enabled and demo.pixmix.enabled


@pytest.mark.parametrize("override, message", [
    ("optim.lr=nan", "'optim.lr' must be a finite number, got nan"),
    ("optim.weight_decay=.inf", "'optim.weight_decay' must be a finite number, got inf"),
    ("data.val_crop=300", "'data.val_crop'=300 is larger than 'data.val_resize'=256"),
    ("pixmix.bank_size=0", "'pixmix.bank_size' must be positive"),
])
def test_values_no_run_can_use_are_refused(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, [override])


def test_non_utf8_config_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("optim:\n  lr: 0.1  # d\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not UTF-8 text \(byte 0xe9"):
        load_config(path)
