"""Checkpoints: atomic write, rotation, truncated files skipped, RNG round trip, weights_only."""
import random

import numpy as np
import pytest
import torch
import torchvision

from dali_pixmix.checkpoint import (
    atomic_save,
    capture_rng,
    find_latest_valid,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    restore_rng,
    save_step_checkpoint,
)

pytestmark = pytest.mark.unit


def state(epoch, step, model=None):
    return {"model": (model or torch.nn.Linear(2, 2)).state_dict(), "epoch": epoch, "step": step,
            "epoch_step": step, "classes": ["n01", "n02"], "arch": "x", "rng": capture_rng(),
            "config": {"optim": {"lr": 0.1}}, "optimizer": None, "scheduler": {"step": step},
            "scaler": None}


def test_rotation_keeps_newest_and_orders_by_step(tmp_path):
    for step in (5, 10, 15, 20):
        save_step_checkpoint(state(step // 10, step), tmp_path, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt_e0001_s000000015.pt", "ckpt_e0002_s000000020.pt"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_truncated_newest_is_skipped_with_warning(tmp_path):
    save_step_checkpoint(state(0, 3), tmp_path, keep=5)
    newest = save_step_checkpoint(state(0, 6), tmp_path, keep=5)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="skipping unreadable checkpoint"):
        ckpt = find_latest_valid(tmp_path)
    assert ckpt["step"] == 3
    with pytest.raises(ValueError, match="may be truncated"):
        load_checkpoint(newest)
    assert resolve_resume("none", tmp_path) is None
    assert find_latest_valid(tmp_path / "empty") is None


def test_foreign_file_is_a_clear_error(tmp_path):
    atomic_save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a dali-pixmix training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_resume(str(tmp_path / "missing.pt"), tmp_path)


def test_rng_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    atomic_save(state(0, 1), tmp_path / "ckpt_e0000_s000000001.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    restore_rng(load_checkpoint(tmp_path / "ckpt_e0000_s000000001.pt")["rng"])
    got = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_saved_resnet50_weights_load_into_torchvision(tmp_path):
    model = torchvision.models.resnet50(num_classes=7)
    save_step_checkpoint(state(0, 1, model), tmp_path, keep=1)
    ckpt = torch.load(list_checkpoints(tmp_path)[0], weights_only=True)
    fresh = torchvision.models.resnet50(num_classes=7)
    fresh.load_state_dict(ckpt["model"])  # strict: same keys, no "module." prefix
    assert torch.equal(fresh.fc.weight, model.fc.weight)


def test_final_weights_are_refused_for_resuming_with_the_way_to_use_them(tmp_path):
    """final.pt (weights, classes, epoch, step, no optimizer state) cannot be resumed; the
    error says how to train on from it."""
    final = {"model": torch.nn.Linear(2, 2).state_dict(), "classes": ["n01", "n02"], "arch": "x",
             "epoch": 1, "step": 3, "epoch_step": 0, "val": {"top1": 50.0}}
    atomic_save(final, tmp_path / "final.pt")
    with pytest.raises(ValueError, match=r"final weights without optimizer.*--resume none --set "
                                         r"model\.pretrained=.*final\.pt"):
        resolve_resume(str(tmp_path / "final.pt"), tmp_path)


def test_empty_checkpoint_is_named(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint .*empty\.pt is an empty file"):
        load_checkpoint(tmp_path / "empty.pt")


def test_partial_files_of_a_killed_save_are_removed_when_a_run_starts(tmp_path):
    """kill -9 during a save leaves `.ckpt_*.pt.tmp<pid>`; the next start removes them, and
    nothing else."""
    from dali_pixmix.config import load_config
    from dali_pixmix.training.resume import choose_start

    save_step_checkpoint(state(0, 3), tmp_path, keep=2)
    stale = [tmp_path / ".ckpt_e0000_s000000006.pt.tmp4242", tmp_path / ".final.pt.tmp77"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = [tmp_path / ".hidden_notes.tmp1", tmp_path / "ckpt_notes.txt"]
    for path in keep:
        path.write_text("mine")
    cfg = load_config(None, [f"train.output_dir={tmp_path}", "model.arch=x", "optim.lr=0.1"])
    assert choose_start(cfg, "auto")["step"] == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)


def test_a_checkpoint_from_before_augment_method_keeps_its_recipe():
    from dali_pixmix.config import Config
    from dali_pixmix.training.resume import config_changes

    saved = Config().to_dict()
    del saved["augment"]
    saved["pixmix"]["enabled"] = False  # a baseline run written before augment.method
    recipe, _ = config_changes(saved, Config().to_dict())  # default method: pixmix
    assert recipe == [("augment.method", "baseline", "pixmix")]


def test_a_write_that_fails_inside_torch_save_is_the_os_error_naming_the_file(tmp_path):
    """torch.save turns a failed write (a full disk; here the file-size limit, which fails the
    same way mid-file) into its own RuntimeError raised while handling the OSError: the
    caller gets the OSError naming the checkpoint, the partial file is removed and the
    previous checkpoint is intact."""
    import errno
    import resource
    import signal

    from dali_pixmix.oserrors import os_error_line

    path = tmp_path / "final.pt"
    atomic_save({"model": {"w": torch.ones(4)}}, path)
    before = path.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, limits[1]))
    try:
        with pytest.raises(OSError) as caught:
            atomic_save({"model": {"w": torch.zeros(300_000)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(path)
    line = os_error_line(caught.value)
    assert line.startswith(f"file system error: {path} (File too large)") and "\n" not in line
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["final.pt"]


def test_a_ctrl_c_in_the_middle_of_torch_save_stays_a_ctrl_c():
    """A second Ctrl-C landing while torch.save writes makes torch's zip writer fail in its
    own cleanup ("unexpected pos"), a RuntimeError hiding the KeyboardInterrupt: the save
    raises the KeyboardInterrupt, so the run stops with its one line (exit 130)."""
    import io

    from dali_pixmix.checkpoint import save_to

    class InterruptedFile(io.BytesIO):
        def write(self, data):
            if self.tell() > 1000:  # Ctrl-C after the first kilobyte
                raise KeyboardInterrupt
            return super().write(data)

    with pytest.raises(KeyboardInterrupt):
        save_to({"model": {"w": torch.zeros(100_000)}}, InterruptedFile())
    with pytest.raises(RuntimeError):  # what torch.save alone raises: the reason for save_to
        torch.save({"model": {"w": torch.zeros(100_000)}}, InterruptedFile())


def test_a_file_that_is_no_checkpoint_is_refused_in_one_line_never_suggesting_unsafe_loading(
        tmp_path):
    import os
    import pickle

    from dali_pixmix.checkpoint import read_checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    torch.save({"model": Payload()}, tmp_path / "malicious.pt")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with open(tmp_path / "pickled.pt", "wb") as handle:
        pickle.dump({"model": Payload()}, handle)
    for name, held in (("malicious", "an object (posix.system)"), ("random", "something"),
                       ("pickled", "something")):
        with pytest.raises(ValueError) as caught:
            read_checkpoint(tmp_path / f"{name}.pt")
        text = str(caught.value)
        assert text.startswith(f"{tmp_path / name}.pt is not a loadable checkpoint: it holds "
                               f"{held} other than tensors"), text
        assert "\n" not in text and "weights_only" not in text and "succeed" not in text


def test_weights_identity_follows_the_content_not_the_file(tmp_path):
    """The same weights saved twice (another mtime, another container, other extra keys) have
    one identity; other weights another. final.pt records it when saved."""
    import time

    from dali_pixmix.checkpoint import (
        WEIGHTS_DIGEST,
        checkpoint_identity,
        read_checkpoint,
        state_digest,
    )

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    atomic_save({"model": model.state_dict(), "step": 1}, tmp_path / "a.pt")
    time.sleep(0.01)
    torch.save({"state_dict": model.state_dict(), "epoch": 9}, tmp_path / "b.pth")
    first, second = (checkpoint_identity(read_checkpoint(tmp_path / n)) for n in ("a.pt", "b.pth"))
    assert first == second == state_digest(model.state_dict())
    with torch.no_grad():
        model.bias += 1
    assert state_digest(model.state_dict()) != first
    recorded = {"model": model.state_dict(), WEIGHTS_DIGEST: "sha-recorded"}
    assert checkpoint_identity(recorded) == "sha-recorded"


def test_the_reference_codes_released_checkpoints_are_read_with_their_arch(tmp_path):
    """The PixMix authors' ImageNet files: {'epoch', 'arch', 'state_dict' of a DataParallel
    model ('module.' keys), 'best_acc1', 'optimizer'}; 1000 classes, no class list."""
    from dali_pixmix.classes import imagenet_wnids
    from dali_pixmix.models import load_classifier

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    net(torch.zeros(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    wrapped = torch.nn.DataParallel(net)
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": wrapped.state_dict(),
                "best_acc1": torch.tensor(71.2), "optimizer": optimizer.state_dict()}, path)
    model, classes = load_classifier(path)  # no --arch: the file's own
    assert isinstance(model, torchvision.models.ResNet) and len(model.layer1) == 2
    assert classes == list(imagenet_wnids())
    assert torch.equal(model.fc.weight, net.fc.weight)
    with pytest.raises(ValueError) as caught:
        load_classifier(path, arch="resnet50")
    assert str(caught.value) == (f"{path} holds a resnet18, not a resnet50: pass --arch resnet18 "
                                 "or leave --arch out to use the checkpoint's own")


def test_a_wrong_arch_on_a_bare_state_dict_names_the_architecture_it_matches(tmp_path):
    """A torchvision state_dict records no architecture: the error names the one whose
    tensors it matches, in one short line (before: every missing key, ~9 KB)."""
    from dali_pixmix.models import load_classifier

    path = tmp_path / "weights.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError) as caught:
        load_classifier(path)  # the default, resnet50
    assert str(caught.value) == (f"{path} holds a resnet18, not a resnet50: pass --arch "
                                 "resnet18 (the file does not record its architecture)")
