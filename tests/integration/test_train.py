"""Training through the real DALI CPU pipeline (with PixMix) on the tiny generated dataset.

Runs are tiny (resnet18 at 32 px, a few steps); they check behaviour, not accuracy.
"""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from child_env import child_env

from dali_pixmix.checkpoint import list_checkpoints
from dali_pixmix.config import load_config
from dali_pixmix.training.loop import TrainingError, train

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def tiny_overrides(data_root, mixing, out_dir, *extra):
    return [f"data.train={data_root}/train", f"data.val={data_root}/val",
            f"pixmix.mixing_set={mixing}", "pixmix.bank_size=64", f"train.output_dir={out_dir}",
            "data.crop=32", "data.val_resize=36", "data.val_crop=32", "data.num_threads=1",
            "model.arch=resnet18", "train.batch_size=16", "eval.batch_size=24",
            "train.log_every=1", "train.tensorboard=false", "train.deterministic=true",
            "optim.lr=0.05", "eval.calibration_bin_size=10", *extra]


def final_weights(out_dir):
    return torch.load(Path(out_dir) / "final.pt", weights_only=True)["model"]


def test_mid_epoch_resume_reproduces_the_uninterrupted_run(tiny_imagenet, tiny_mixing_dir,
                                                           tmp_path):
    """2 epochs x 3 steps straight == stop at step 4 (mid epoch 2), resume, finish; with PixMix
    in the pipeline and CutMix on the training device (method pixmix_cutmix), whose draws
    must replay too."""
    method = "augment.method=pixmix_cutmix"
    straight = tmp_path / "straight"
    cfg = load_config(None, tiny_overrides(tiny_imagenet, tiny_mixing_dir, straight,
                                           "train.epochs=2", method))
    result = train(cfg, resume="none")
    assert result["status"] == "finished" and result["step"] == 6

    split = tmp_path / "split"
    first = load_config(None, tiny_overrides(tiny_imagenet, tiny_mixing_dir, split,
                                             "train.epochs=2", "train.max_steps=4", method))
    assert train(first, resume="auto") == {"status": "stopped", "step": 4}
    assert list_checkpoints(split)[-1].name == "ckpt_e0001_s000000004.pt"
    # the same command again trains nothing more: the limit is reached
    assert train(first, resume="auto") == {"status": "stopped", "step": 4}
    assert list_checkpoints(split)[-1].name == "ckpt_e0001_s000000004.pt"
    second = load_config(None, tiny_overrides(tiny_imagenet, tiny_mixing_dir, split,
                                              "train.epochs=2", method))
    assert train(second, resume="auto")["step"] == 6

    a, b = final_weights(straight), final_weights(split)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and "val" in lines[-1]  # one line per epoch
    # the resumed epoch's training loss covers all of its steps, as in the straight run
    plain = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in lines] == [x["loss"] for x in plain]
    assert (split / "config.yaml").is_file()


def test_sigterm_saves_a_checkpoint_and_exits_zero(tiny_imagenet, tiny_mixing_dir, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, str(REPO / "train_imagenet.py"), "--config",
            str(REPO / "configs" / "demo.yaml"), "--set", "demo.enabled=false"]
    for item in tiny_overrides(tiny_imagenet, tiny_mixing_dir, out, "train.epochs=50",
                               "train.batch_size=8"):
        args += ["--set", item]
    env = child_env(OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    seen = []
    for line in proc.stdout:  # wait until training steps are running
        seen.append(line)
        if "(global 2)" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    log = "".join(seen) + rest
    assert proc.returncode == 0, log
    assert "SIGTERM" in log and "stopped at step" in log
    saved = list_checkpoints(out)
    assert saved, log
    step = int(saved[-1].stem.split("_s")[1])
    resumed = subprocess.run(args + ["--set", f"train.max_steps={step + 1}"], capture_output=True,
                             text=True, env=env, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {saved[-1]}" in resumed.stdout
    assert f"stopped at step {step + 1}" in resumed.stdout
    # the preempted + resumed run equals an uninterrupted run of step + 1 steps
    straight = [a.replace(str(out), str(tmp_path / "straight")) for a in args]
    plain = subprocess.run(straight + ["--set", f"train.max_steps={step + 1}"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    a = torch.load(list_checkpoints(out)[-1], weights_only=True)["model"]
    b = torch.load(list_checkpoints(tmp_path / "straight")[-1], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_the_step(tiny_imagenet, tiny_mixing_dir, tmp_path):
    poisoned = torchvision.models.resnet18(num_classes=6).state_dict()
    poisoned["fc.bias"][0] = float("nan")
    torch.save(poisoned, tmp_path / "nan.pth")
    cfg = load_config(None, tiny_overrides(tiny_imagenet, tiny_mixing_dir, tmp_path / "out",
                                           f"model.pretrained={tmp_path / 'nan.pth'}"))
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 1 ") as caught:
        train(cfg, resume="none")
    assert list_checkpoints(tmp_path / "out") == []
    # no checkpoint exists to be "kept"
    assert "no checkpoint had been saved yet" in str(caught.value)
    assert "last good checkpoint" not in str(caught.value)


def test_resnet50_checkpoint_loads_into_torchvision(tiny_imagenet, tiny_mixing_dir, tmp_path):
    """A 1000-class torchvision checkpoint initialises the backbone; the head is replaced."""
    backbone = torchvision.models.resnet50()
    torch.save(backbone.state_dict(), tmp_path / "resnet50.pth")
    cfg = load_config(None, tiny_overrides(tiny_imagenet, tiny_mixing_dir, tmp_path / "out",
                                           "model.arch=resnet50", "train.max_steps=1",
                                           "optim.lr=0.0001",
                                           "augment.method=baseline",
                                           f"model.pretrained={tmp_path / 'resnet50.pth'}"))
    assert train(cfg, resume="none")["status"] == "stopped"
    ckpt = torch.load(list_checkpoints(tmp_path / "out")[-1], weights_only=True)
    model = torchvision.models.resnet50(num_classes=6)
    model.load_state_dict(ckpt["model"])  # strict, no "module." prefixes
    assert ckpt["arch"] == "resnet50" and len(ckpt["classes"]) == 6
    assert ckpt["classes"] == sorted(p.name for p in (tiny_imagenet / "train").iterdir())
    # one small SGD step from the pretrained weights: trained, yet far closer to them than a
    # fresh initialisation is
    torch.manual_seed(0)
    fresh = torchvision.models.resnet50(num_classes=6)
    weight = model.layer1[0].conv1.weight
    delta = (weight - backbone.layer1[0].conv1.weight).abs().max()
    assert 0 < 20 * delta < (weight - fresh.layer1[0].conv1.weight).abs().max()


def test_resume_with_other_classes_is_an_error(tiny_imagenet, tiny_mixing_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_imagenet, tiny_mixing_dir, tmp_path / "out",
                                           "train.max_steps=1", "augment.method=baseline"))
    train(cfg, resume="none")
    state = torch.load(list_checkpoints(tmp_path / "out")[-1], weights_only=True)
    state["classes"] = state["classes"][:-1] + ["n99999999"]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="trained on 6 classes.*other names"):
        train(cfg, resume=str(tmp_path / "other.pt"), previous="archive")
    assert not (tmp_path / "out" / "archive").exists()  # refused before any file moved


def run_cli(*args, timeout=120, **env_vars):
    env = {**child_env(), **env_vars}
    return subprocess.run([sys.executable, str(REPO / "train_imagenet.py"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_config_errors_are_one_line_and_exit_2(tmp_path, tiny_imagenet):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  momentun: 0.9\n")
    result = run_cli("--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {bad}: unknown key 'optim.momentun' (known keys in "
                                     "'optim': lr, min_lr, warmup_epochs, momentum, nesterov, "
                                     "weight_decay, impl)")
    result = run_cli("--config", str(REPO / "configs" / "imagenet_pixmix.yaml"),
                     "--set", "train.epochs=many")
    assert result.returncode == 2 and "key 'train.epochs': expected int" in result.stderr
    result = run_cli("--config", str(REPO / "configs" / "imagenet_pixmix.yaml"),
                     "--set", f"train.output_dir={tmp_path / 'o'}", "--set", "dist.device=cpu")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: 4 configured path(s) missing: data.train: training folder "
        "/path/to/imagenet/train does not exist; data.val: validation folder "
        "/path/to/imagenet/val does not exist; pixmix.mixing_set: mixing set "
        "'/path/to/fractals_and_fvis' does not exist; model.pretrained: weights "
        "'/path/to/resnet50-0676ba61.pth' not found (a local torchvision checkpoint, or null to "
        "train from scratch) (set them in the recipe or with --set KEY=PATH)")
    result = run_cli("--config", str(REPO / "configs" / "imagenet_pixmix.yaml"),
                     "--set", "dist.device=cpu", "--set", f"data.train={tiny_imagenet / 'train'}",
                     "--set", f"data.val={tiny_imagenet / 'val'}",
                     "--set", f"pixmix.mixing_set={tmp_path / 'nothing'}")
    assert result.returncode == 2 and "mixing set" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_gpu_recipe_without_a_usable_gpu_stops_with_why_and_how_to_force_the_cpu(tmp_path):
    """The ImageNet recipes ask for dist.device=cuda: no silent CPU run (CUDA_VISIBLE_DEVICES
    hides every GPU, so this holds on GPU machines too)."""
    result = run_cli("--config", str(REPO / "configs" / "imagenet_baseline.yaml"),
                     "--set", f"train.output_dir={tmp_path / 'o'}", CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert result.stderr.startswith("error: device cuda was asked for but torch sees no GPU: ")
    assert "CUDA_VISIBLE_DEVICES is ''" in result.stderr  # why
    assert "--set dist.device=cpu" in result.stderr  # how to run on the CPU anyway
    assert not (tmp_path / "o").exists()


def test_demo_generates_data_trains_and_prints_the_table(tmp_path, capsys):
    """The README demo path at toy size: data + fractals generated, PixMix training, table."""
    cfg = load_config(REPO / "configs" / "demo.yaml", [
        f"demo.root={tmp_path / 'demo'}", "demo.num_classes=3", "demo.train_per_class=8",
        "demo.val_per_class=4", "demo.fractals=4", "demo.min_size=40", "demo.max_size=64",
        "pixmix.bank_size=64", "data.crop=32", "data.val_resize=36", "data.val_crop=32",
        "data.num_threads=1", "train.epochs=1", "train.batch_size=8", "eval.batch_size=12",
        "eval.calibration_bin_size=4", f"train.output_dir={tmp_path / 'out'}",
        "train.tensorboard=false"])
    result = train(cfg, resume="auto")
    assert result["status"] == "finished" and result["val"]["n"] == 12
    assert len(list((tmp_path / "demo" / "imagenet" / "train").iterdir())) == 3
    assert len(list((tmp_path / "demo" / "fractals").glob("*.png"))) == 4
    captured = capsys.readouterr()
    table = captured.out
    assert "\r" not in captured.err + table  # no progress-bar fragments in a log file
    assert "| top-1 accuracy (%) |" in table and "| anomaly detection AUROC, msp (%) |" in table
    amp = "bf16" if torch.cuda.is_available() else "off"  # the first line: what auto chose
    assert f"amp {amp} (train.amp=auto), device" in table and "amp None" not in table
    # the same command again: the finished run is reported, nothing is validated, trained or
    # written again (final.pt and the evaluation caches keep their bytes and times; only the
    # folder's lock file names its new holder)
    out = tmp_path / "out"

    def files():
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*")
                if p.is_file() and p.name != ".train.lock"}

    before = files()
    again = train(cfg, resume="auto")
    assert again == {"status": "finished", "step": result["step"], "val": result["val"]}
    assert files() == before
    printed = capsys.readouterr().out
    assert f"the run in {out} finished at step {result['step']}: nothing to train" in printed
    assert "validation:" not in printed and "resumed from" not in printed
    assert table.split("| top-1")[1] == printed.split("| top-1")[1]  # the same results table


def interrupt_once_training(out_dir, times):
    """A thread that sends this process `times` Ctrl-Cs (SIGINT) once the run in `out_dir`
    has written its config.yaml (its training steps are about to run); a second one only
    after the run has handled the first (two signals in a row can reach Python as one)."""
    import os
    import threading
    import time

    def fire():
        deadline = time.monotonic() + 120
        while not (out_dir / "config.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)
        if times == 2:
            handler = signal.getsignal(signal.SIGINT)  # the run's StopFlag
            while not getattr(getattr(handler, "__self__", None), "requested", True):
                time.sleep(0.002)
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_saves_a_checkpoint_and_a_second_one_stops_at_once(tiny_imagenet, tiny_mixing_dir,
                                                                   tmp_path, capsys):
    """A first Ctrl-C saves a checkpoint at the next step and stops (exit 0, as SIGTERM); a
    second one stops at once with one line saying what is kept (exit 130), no traceback."""
    from entry_points import load_script

    main = load_script("train_imagenet.py").main
    late = []  # a Ctrl-C reaching the test after a run ended is recorded here, not raised
    previous = signal.signal(signal.SIGINT, lambda *args: late.append(args))
    try:
        for times in (1, 2):
            ctrl_c_runs(main, tiny_imagenet, tiny_mixing_dir, tmp_path / f"run{times}", times,
                        capsys)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not late


def ctrl_c_runs(main, tiny_imagenet, tiny_mixing_dir, out, times, capsys):
    """`train_imagenet.py` interrupted by `times` Ctrl-Cs: what it printed and kept."""
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", "demo.enabled=false"]
    for item in tiny_overrides(tiny_imagenet, tiny_mixing_dir, out, "train.epochs=50",
                               "train.batch_size=8", "augment.method=baseline"):
        args += ["--set", item]
    ours = signal.getsignal(signal.SIGINT)
    thread = interrupt_once_training(out, times)
    try:
        code = main(args)
    except KeyboardInterrupt:  # would abort the test session otherwise
        pytest.fail("Ctrl-C escaped train_imagenet.main")
    thread.join()
    printed = capsys.readouterr()
    assert signal.getsignal(signal.SIGINT) is ours  # the run gave the handlers back
    assert "Traceback" not in printed.err
    if times == 1:
        assert code == 0, printed.err
        assert ("interrupted (Ctrl-C): the run saves a checkpoint at the next step"
                in printed.err)
        saved = list_checkpoints(out)
        # saved for the signal, or as the epoch's end when the signal came in its last step
        reasons = ("(SIGINT)", "(end of epoch")
        assert saved and any(f"saved checkpoint {saved[-1]} {r}" in printed.out for r in reasons)
        assert "SIGINT" in printed.out
        assert "stopped at step" in printed.out
    else:
        assert code == 130, printed.err
        errors = [line for line in printed.err.splitlines() if line.startswith("error: ")]
        assert errors == [f"error: interrupted (Ctrl-C) without saving; the checkpoints in "
                          f"{out} are kept: `--resume auto` continues from the newest"]
