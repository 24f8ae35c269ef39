"""Training pieces that need no data pipeline: validation metrics, AMP choice, per-epoch order."""
import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from dali_pixmix.config import load_config
from dali_pixmix.distributed import DistInfo
from dali_pixmix.evaluation.runner import batch_predictions
from dali_pixmix.pipelines.loaders import epoch_order, train_steps_per_epoch
from dali_pixmix.training.loop import validation_metrics
from dali_pixmix.training.setup import (
    amp_mode,
    announce_device,
    check_tensorboard,
    resolve_amp,
)
from dali_pixmix.training.state import weights_digest

pytestmark = pytest.mark.unit


def test_validation_metrics_match_sklearn_and_hand_values():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(300, 7))).float()
    labels = torch.from_numpy(rng.integers(0, 7, size=300))
    out = validation_metrics(batch_predictions(logits, labels), bin_size=100, num_classes=7)
    probs = logits.double().softmax(1).numpy()
    assert out["n"] == 300
    assert out["top1"] == pytest.approx(100 * top_k_accuracy_score(labels, probs, k=1,
                                                                    labels=range(7)))
    assert out["top5"] == pytest.approx(100 * top_k_accuracy_score(labels, probs, k=5,
                                                                    labels=range(7)))
    loss = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    # RMS by hand: 3 equal-mass bins of 100 sorted by confidence, the last one dropped (reference)
    conf, correct = probs.max(1), (probs.argmax(1) == labels.numpy()).astype(float)
    order = np.argsort(conf, kind="stable")
    conf, corr = conf[order], correct[order]
    gaps = [conf[i:i + 100].mean() - corr[i:i + 100].mean() for i in (0, 100)]
    assert out["rms"] == pytest.approx(100 * np.sqrt(sum(100 / 300 * g * g for g in gaps)),
                                       rel=1e-5)
    assert out["chance_top1"] == pytest.approx(100 / 7)


def test_small_validation_sets_report_no_rms():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = validation_metrics(batch_predictions(logits, torch.tensor([0, 0])), bin_size=100,
                             num_classes=2)
    assert out["rms"] is None and "2 images < eval.calibration_bin_size=100" in out["rms_note"]
    assert out["top1"] == 50.0


def test_steps_per_epoch_is_the_smallest_shard_in_whole_batches():
    # DALI's shards of 50 over 3 ranks hold 16, 17, 17 samples: every rank runs 16 // 5 = 3
    assert train_steps_per_epoch(50, 3, 5) == 3
    assert train_steps_per_epoch(50, 1, 5) == 10 and train_steps_per_epoch(4, 2, 3) == 0


def test_amp_defaults_off_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp(load_config(None), cpu) is None
    assert resolve_amp(load_config(None, ["train.amp=bf16"]), cpu) is torch.bfloat16
    assert resolve_amp(load_config(None, ["train.amp=fp16"]), cpu) is torch.float16


def test_the_log_names_the_amp_mode_auto_chose():
    auto = load_config(None)
    assert amp_mode(auto, None) == "off (train.amp=auto)"
    assert amp_mode(auto, torch.bfloat16) == "bf16 (train.amp=auto)"
    assert amp_mode(load_config(None, ["train.amp=fp16"]), torch.float16) == "fp16"


def test_auto_falling_back_to_the_cpu_is_a_visible_warning(capsys):
    cpu = DistInfo(device=torch.device("cpu"))
    announce_device(load_config(None), cpu)  # dist.device defaults to auto
    out = capsys.readouterr().out
    assert out.startswith("warning: dist.device=auto found no usable GPU (")
    assert "training on the CPU" in out and out.count("\n") == 1
    announce_device(load_config(None, ["dist.device=cpu"]), cpu)  # asked for: no warning
    assert capsys.readouterr().out == ""


def test_tensorboard_is_opt_in_and_asking_for_it_without_the_package_is_an_error():
    assert load_config(None).train.tensorboard is False
    check_tensorboard(load_config(None))  # off: nothing to check
    asked = load_config(None, ["train.tensorboard=true"])
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"'train.tensorboard' is true but tensorboard is "
                                             r"not installed: pip install"):
            check_tensorboard(asked)
    else:
        check_tensorboard(asked)


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = epoch_order(50, seed=0, epoch=3), epoch_order(50, seed=0, epoch=3)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, seed=0, epoch=4))


def test_weights_digest_sees_every_tensor():
    model = torch.nn.BatchNorm1d(3)
    before = weights_digest(model)
    model.num_batches_tracked += 1  # a 0-d integer buffer
    assert weights_digest(model) != before


def test_fp16_steps_with_the_fused_sgd_read_nothing_on_the_host():
    """GradScaler hands its inf check to an optimizer that supports AMP scaling (PyTorch's
    fused SGD, what `build_optimizer` picks on GPU) instead of reading it with `.item()` every
    step, as it does for the plain SGD."""
    from host_reads import HostReads

    from dali_pixmix.training.setup import build_optimizer

    cfg = load_config(None)
    model = torch.nn.Linear(4, 3)
    fused = build_optimizer(cfg, model, torch.device("cuda"))  # built, not stepped, on CPU
    assert fused.param_groups[0]["fused"] is True
    assert not build_optimizer(cfg, model, torch.device("cpu")).param_groups[0]["fused"]
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    seen = {}
    for name, fuse in (("fused", True), ("plain", None)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fuse)
        scaler = torch.amp.GradScaler("cpu")
        mode = HostReads()
        for step in range(3):
            with mode:
                mode.armed = step > 0
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        seen[name] = mode.seen
    assert seen == {"fused": [], "plain": ["item", "item"]}
