"""Static and behavioural checks of docker/ and docker/slurm/ (no docker engine, no SLURM needed).

The sbatch scripts are RUN with stand-in `srun`/`scontrol`/`scancel` programs on PATH that log
their arguments, so the checks see the real torchrun command line, the real trap and requeue
logic; torchrun's own argument parser validates the launcher flags.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pins import other_torch_than_the_images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SBATCH = sorted((DOCKER / "slurm").glob("*.sbatch"))
SHELL_SCRIPTS = sorted(DOCKER.rglob("*.sh")) + SBATCH


def _dockerfile_instructions():
    """(INSTRUCTION, argument) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    kept = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", "\n".join(kept))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def test_every_shell_script_parses():
    assert len(SHELL_SCRIPTS) >= 3, SHELL_SCRIPTS
    for script in SHELL_SCRIPTS:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script}: {done.stderr}"


def test_dockerfile_base_user_entrypoint():
    ins = _dockerfile_instructions()
    froms = [v for k, v in ins if k == "FROM"]
    assert froms, "no FROM"
    base = froms[0]
    if base.startswith("${"):  # resolved from an ARG default
        name = base.strip("${}")
        base = [v.split("=", 1)[1] for k, v in ins if k == "ARG" and v.startswith(name + "=")][0]
    assert ":" in base and not base.endswith(":latest"), f"base image not pinned: {base}"
    users = [v for k, v in ins if k == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must end as a non-root USER"
    entry = [v for k, v in ins if k == "ENTRYPOINT"]
    assert entry and "docker/entrypoint.sh" in entry[-1]
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK), "entrypoint.sh must be executable"
    runs = " ".join(v for k, v in ins if k == "RUN")
    assert "pip install --no-deps ." in runs, "the package must be installed from the repository"
    env = " ".join(v for k, v in ins if k == "ENV")
    assert re.search(r"NVIDIA_DRIVER_CAPABILITIES=\S*video", env), \
        "NVDEC (video) is needed by ImageNet-P"
    for k, v in ins:
        if k == "COPY":
            for src in shlex.split(v)[:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), f"COPY source {src} missing"


def test_requirements_pin_every_dependency_of_setup_py():
    pins = {}
    for line in (DOCKER / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9_.+\-]*", line), \
                f"not pinned: {line}"
            name, version = line.split("==")
            pins[name.lower()] = version
    setup_text = (ROOT / "setup.py").read_text()
    block = re.search(r"install_requires=\[(.*?)\]", setup_text, re.S).group(1)
    deps = [re.split(r"[<>=!~\[ ]", d)[0].lower() for d in re.findall(r'"([^"]+)"', block)]
    assert deps, "could not read install_requires"
    missing = [d for d in deps if d not in pins]
    assert not missing, f"docker/requirements.txt lacks pins for {missing}"


def test_pins_satisfy_setup_py():
    """Every pinned version is one that setup.py's requirement admits (no drift between them)."""
    from packaging.requirements import Requirement
    pins = dict(line.split("==") for line in (DOCKER / "requirements.txt").read_text().split()
                if "==" in line)
    block = re.search(r"install_requires=\[(.*?)\]", (ROOT / "setup.py").read_text(), re.S)
    for text in re.findall(r'"([^"]+)"', block.group(1)):
        req = Requirement(text)
        assert req.specifier.contains(pins[req.name], prereleases=True), (req, pins[req.name])


def test_entrypoint_passes_arguments_through(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import sys; print('ARGS', sys.argv[1:])\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = subprocess.run([str(DOCKER / "entrypoint.sh"), str(script), "--flag", "a b"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ARGS ['--flag', 'a b']" in out.stdout
    out = subprocess.run([str(DOCKER / "entrypoint.sh"), "bash", "-c", "exit 7"], timeout=30)
    assert out.returncode == 7, "exit status of the command must pass through"
    out = subprocess.run([str(DOCKER / "entrypoint.sh")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "--ipc=host" in out.stdout


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a path's parents."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(re.fullmatch(rx, p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_code_and_drops_data():
    for needed in ["setup.py", "README.md", "dali_pixmix/__init__.py",
                   "dali_pixmix/data/imagenet_synsets.txt", "docker/entrypoint.sh",
                   "docker/requirements.txt", "configs/demo.yaml", "train_imagenet.py"]:
        assert not _dockerignore_excludes(needed), f".dockerignore drops {needed}"
    for data in [".git/HEAD", "runs/imagenet_pixmix/step_100.pt", "demo_data/train/x.JPEG",
                 "data/imagenet/train/n01440764/a.JPEG", "bank_256.npy", "cache/bank.npy",
                 "outputs/final.pth", "x/dali_pixmix+0.1.0.sqsh",
                 "dali_pixmix/__pycache__/models.cpython-311.pyc"]:
        assert _dockerignore_excludes(data), f".dockerignore keeps {data} in the build context"


# ---- sbatch scripts, run against stand-in SLURM commands -------------------------------------

FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_LOG/srun.args"
echo "$*" >> "$FAKE_LOG/srun.calls"
trap 'echo USR1 >> "$FAKE_LOG/tasks.signals"; exit "${FAKE_USR1_EXIT:-0}"' USR1
trap 'echo TERM >> "$FAKE_LOG/tasks.signals"; exit 0' TERM
echo $$ > "$FAKE_LOG/srun.pid.tmp" && mv "$FAKE_LOG/srun.pid.tmp" "$FAKE_LOG/srun.pid"
if [[ -n "${FAKE_SRUN_EXIT:-}" ]]; then exit "$FAKE_SRUN_EXIT"; fi
for _ in $(seq 600); do sleep 0.05; done
exit 3
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG/scontrol.calls"
if [[ "$1 $2" == "show hostnames" ]]; then printf 'gpu-a17\\ngpu-a18\\n'; fi
"""
FAKE_SCANCEL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG/scancel.calls"
sig=$(printf '%s\\n' "$@" | sed -n 's/^--signal=//p')
kill -s "$sig" "$(cat "$FAKE_LOG/srun.pid")"
"""


def _fake_slurm(tmp_path):
    bindir, log = tmp_path / "bin", tmp_path / "log"
    bindir.mkdir()
    log.mkdir()
    for name, body in [("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("scancel", FAKE_SCANCEL)]:
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_LOG=str(log),
               SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="gpu-a[17-18]", SLURM_JOB_NUM_NODES="2",
               SLURM_NNODES="2", SLURM_CPUS_PER_TASK="64", DATA_ROOT=str(tmp_path / "data"),
               OUT_ROOT=str(tmp_path / "runs"), CHECKPOINT="imagenet_pixmix/final.pt")
    return env, log


def _start(script, tmp_path, env, *args):
    return subprocess.Popen(["bash", str(script), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path, proc, seconds=10.0):
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.02)


def _torchrun_args(srun_args):
    """Split the logged srun argv into (srun options, torchrun namespace)."""
    from torch.distributed.run import get_args_parser
    if other_torch_than_the_images():
        pytest.skip(other_torch_than_the_images())
    i = srun_args.index("torchrun")
    ns, unknown = get_args_parser().parse_known_args(srun_args[i + 1:])
    assert not unknown, f"torchrun does not know {unknown}"
    return srun_args[:i], ns


def _directives(script):
    return re.findall(r"^#SBATCH\s+(\S+)", script.read_text(), re.M)


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
def test_sbatch_directives_precede_commands(script):
    seen_command = False
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH"):
            assert not seen_command, f"{script.name}: #SBATCH after a command is ignored: {line}"
        elif line.strip() and not line.startswith("#"):
            seen_command = True
    assert any(d.startswith("--gpus-per-node=") for d in _directives(script))


@pytest.mark.parametrize("script", SBATCH, ids=lambda p: p.name)
def test_sbatch_rendezvous_from_slurm_environment(script, tmp_path):
    env, log = _fake_slurm(tmp_path)
    proc = _start(script, tmp_path, dict(env, FAKE_SRUN_EXIT="0"))
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    srun_opts, ns = _torchrun_args((log / "srun.args").read_text().splitlines())
    assert "show hostnames gpu-a[17-18]" in (log / "scontrol.calls").read_text()
    assert ns.rdzv_backend == "c10d"
    assert ns.rdzv_endpoint.split(":")[0] == "gpu-a17", "endpoint must be the FIRST host"
    assert ns.rdzv_id == "4242" and ns.nnodes == "2" and ns.nproc_per_node == "8"
    assert ns.training_script.endswith(".py") and (ROOT / ns.training_script).parent.is_dir()
    assert any(o.startswith("--container-image=") for o in srun_opts)
    mounts = [o for o in srun_opts if o.startswith("--container-mounts=")][0]
    assert f"{tmp_path / 'data'}:/data:ro" in mounts and f"{tmp_path / 'runs'}:/outputs" in mounts
    if script.name == "train.sbatch":
        assert f"{tmp_path / 'data' / 'mixing'}:/mixing:ro" in mounts, "mixing set mount"
        assert "pixmix.mixing_set=/mixing/fractals_and_fvis" in ns.training_script_args
    assert "--ntasks-per-node=1" in srun_opts, "one torchrun per node"


def test_eval_sbatch_runs_the_whole_suite_once(tmp_path):
    env, log = _fake_slurm(tmp_path)
    proc = _start(DOCKER / "slurm" / "eval.sbatch", tmp_path, dict(env, FAKE_SRUN_EXIT="0"))
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert len((log / "srun.calls").read_text().splitlines()) == 1
    _, ns = _torchrun_args((log / "srun.args").read_text().splitlines())
    assert ns.training_script == "eval/run_all.py"
    args = ns.training_script_args
    assert args[args.index("--data-root") + 1] == "/data"
    assert args[args.index("--checkpoint") + 1] == "/outputs/imagenet_pixmix/final.pt"


def test_train_sbatch_requeue_contract():
    script = DOCKER / "slurm" / "train.sbatch"
    directives = _directives(script)
    assert "--requeue" in directives
    lead = [int(d.split("@")[1]) for d in directives if re.fullmatch(r"--signal=B:USR1@\d+", d)]
    assert lead and lead[0] >= 60, "USR1 must reach the batch shell (B:) with time to checkpoint"


def test_train_sbatch_forwards_usr1_and_requeues(tmp_path):
    env, log = _fake_slurm(tmp_path)
    proc = _start(DOCKER / "slurm" / "train.sbatch", tmp_path, env)
    _wait_for(log / "srun.pid", proc)
    time.sleep(0.2)  # let the batch shell reach `wait`
    proc.send_signal(signal.SIGUSR1)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert (log / "tasks.signals").read_text().split() == ["USR1"], "the tasks must get USR1"
    assert "--signal=USR1 4242" in (log / "scancel.calls").read_text()
    assert "requeue 4242" in (log / "scontrol.calls").read_text()
    srun_args = (log / "srun.args").read_text().splitlines()
    _, ns = _torchrun_args(srun_args)
    assert ns.training_script == "train_imagenet.py"
    assert "SIGUSR1" in ns.signals_to_handle.split(","), "torchrun must relay USR1 to its workers"
    lead = int(re.search(r"--signal=B:USR1@(\d+)",
                         (DOCKER / "slurm" / "train.sbatch").read_text()).group(1))
    assert ns.shutdown_timeout is not None and ns.shutdown_timeout < lead, \
        "torchrun must give workers time to checkpoint, but finish before the time limit"
    tail = ns.training_script_args
    assert tail[-2:] == ["--resume", "auto"]
    assert "--config" in tail and (ROOT / tail[tail.index("--config") + 1]).parent.is_dir()


def _train_sbatch_after_usr1(tmp_path, **env_extra):
    """Run train.sbatch, send its shell SIGUSR1 once training runs: (process, output, logs)."""
    env, log = _fake_slurm(tmp_path)
    proc = _start(DOCKER / "slurm" / "train.sbatch", tmp_path, dict(env, **env_extra))
    _wait_for(log / "srun.pid", proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    return proc, proc.communicate(timeout=30)[0], log


def test_train_sbatch_stops_requeueing_after_max_requeues(tmp_path):
    proc, out, log = _train_sbatch_after_usr1(tmp_path, SLURM_RESTART_COUNT="3",
                                              MAX_REQUEUES="3")
    assert proc.returncode == 1 and "MAX_REQUEUES" in out, out
    assert "requeue" not in (log / "scontrol.calls").read_text()


def test_train_sbatch_does_not_requeue_a_run_stopped_by_a_bad_image(tmp_path):
    """Training that stopped on an image it cannot decode (recorded in bad_images.txt) would
    stop again after a requeue: the job ends instead of looping."""
    record = tmp_path / "runs" / "imagenet_pixmix" / "bad_images.txt"
    record.parent.mkdir(parents=True)
    record.write_text("/data/imagenet/train/n01440764/broken.JPEG\n")
    proc, out, log = _train_sbatch_after_usr1(tmp_path, FAKE_USR1_EXIT="1")
    assert proc.returncode == 1 and "not requeueing" in out, out
    assert "requeue" not in (log / "scontrol.calls").read_text()


def test_image_python_is_supported():
    """The image's Python is one that setup.py's python_requires admits."""
    from packaging.specifiers import SpecifierSet
    ins = _dockerfile_instructions()
    base = [v.split("=", 1)[1] for k, v in ins if k == "ARG" and v.startswith("PYTHON_IMAGE=")][0]
    version = re.match(r"python:(\d+\.\d+\.\d+)", base)
    assert version, f"base {base} is not an official python image with a full version tag"
    requires = re.search(r'python_requires="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert SpecifierSet(requires).contains(version.group(1))


def test_train_sbatch_no_requeue_without_signal(tmp_path):
    env, log = _fake_slurm(tmp_path)
    proc = _start(DOCKER / "slurm" / "train.sbatch", tmp_path, dict(env, FAKE_SRUN_EXIT="5"),
                  "--config", "configs/demo.yaml")
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 5, out
    assert "requeue" not in (log / "scontrol.calls").read_text()
    _, ns = _torchrun_args((log / "srun.args").read_text().splitlines())
    assert ns.training_script_args[:2] == ["--config", "configs/demo.yaml"]


def test_train_sbatch_sigterm_does_not_requeue(tmp_path):
    env, log = _fake_slurm(tmp_path)
    proc = _start(DOCKER / "slurm" / "train.sbatch", tmp_path, env)
    _wait_for(log / "srun.pid", proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    os.kill(int((log / "srun.pid").read_text()), signal.SIGTERM)  # SLURM signals the tasks too
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "requeue" not in (log / "scontrol.calls").read_text()


WORKER = """
import os, signal, sys, time
flag = []
signal.signal(signal.SIGUSR1, lambda *_: flag.append(1))
open(os.path.join(sys.argv[1], "ready_" + os.environ["RANK"]), "w").close()
end = time.monotonic() + 60
while not flag and time.monotonic() < end:
    time.sleep(0.05)
time.sleep(1.0)  # the checkpoint save
with open(os.path.join(sys.argv[1], "saved_" + os.environ["RANK"]), "w") as f:
    f.write("usr1" if flag else "timeout")
"""


def test_torchrun_relays_usr1_to_workers_with_the_scripts_flags(tmp_path):
    """Real torchrun (the pinned version), with the launcher flags train.sbatch produces: a
    SIGUSR1 to torchrun reaches every worker, which finishes its 'checkpoint' before exiting."""
    env, log = _fake_slurm(tmp_path)
    proc = _start(DOCKER / "slurm" / "train.sbatch", tmp_path, dict(env, FAKE_SRUN_EXIT="0"))
    proc.communicate(timeout=30)
    _, ns = _torchrun_args((log / "srun.args").read_text().splitlines())
    (tmp_path / "worker.py").write_text(WORKER)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           f"--signals-to-handle={ns.signals_to_handle}",
           f"--shutdown-timeout={ns.shutdown_timeout}", str(tmp_path / "worker.py"), str(out_dir)]
    run = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    for rank in (0, 1):
        _wait_for(out_dir / f"ready_{rank}", run, seconds=60)
    run.send_signal(signal.SIGUSR1)
    output = run.communicate(timeout=60)[0]
    for rank in (0, 1):
        saved = out_dir / f"saved_{rank}"
        assert saved.is_file() and saved.read_text() == "usr1", output[-2000:]
