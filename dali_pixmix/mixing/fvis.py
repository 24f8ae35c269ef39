"""Feature-visualisation mixing pictures: images that maximise one channel of a trained CNN.

The method of Olah et al., "Feature Visualization" (Distill, 2017), as in Lucid/Lucent:

- each picture is parameterised by a Fourier spectrum (every frequency scaled by 1/frequency, so
  Adam's steps favour smooth, natural-looking pictures) in a decorrelated colour space (ImageNet's
  colour covariance square root), squashed into [0, 1] by a sigmoid;
- every step shows the network a randomly transformed copy (grey padding, jitter, random scale,
  small rotation), so only patterns that survive such changes are reinforced;
- Adam maximises the mean activation of the target channel of one layer; many channels are
  optimised together in one batch (the objective is a sum of independent per-picture terms);
- during the first steps the ReLU modules pass gradient that would lift a negative input
  (Lucid's "redirected ReLU"), so a channel that is silent on the grey start picture still starts.

Randomness: each picture draws its initial spectrum and its per-step transforms from its own CPU
generator seeded by (seed, layer, channel), so a picture does not depend on which others share its
batch (a resumed run draws the same numbers) and the same seed gives the same pictures on the
same device (bit-identical on CPU; on CUDA the backward of the resampling uses atomic adds).
"""
from __future__ import annotations

import json
import math
import os
import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dali_pixmix.data.normalise import normalise_imagenet  # the loaders' normalisation

# Square root of ImageNet's RGB colour covariance (Lucid's `color_correlation_svd_sqrt`).
COLOUR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                        [0.27, 0.00, -0.05],
                                        [0.27, -0.09, 0.03]])
SUMMARY_NAME = "fvis_summary.json"


@dataclass(frozen=True)
class FVisSettings:
    """Optimisation settings (Lucid's defaults where it has them)."""
    size: int = 256              # side of the written pictures
    steps: int = 512
    batch: int = 64              # pictures optimised together
    lr: float = 0.05             # Adam
    seed: int = 0
    margin: int = 12             # the network sees size + margin px: grey shows at the borders
    jitter: int = 12             # max shift in px, each direction
    scale: Tuple[float, float] = (0.9, 1.1)
    max_degrees: float = 10.0
    init_sd: float = 0.01        # std of the initial spectrum
    redirect_steps: int = 16     # steps with redirected ReLU gradients (Lucid: 16)


def picture_name(layer: str, channel: int) -> str:
    return f"{layer}_{channel:04d}.png"


# --------------------------------------------------------------------- what made a folder
RECORD_NAME = "fvis_run.json"


def run_record(checkpoint, weights: str, arch: str, settings: FVisSettings) -> Dict:
    """What the pictures of an output folder depend on: the weights (and, for messages, the
    checkpoint file), the architecture and the optimisation settings. Not `batch` (a picture
    does not depend on the others in its batch) nor the layers and channels (they choose
    which pictures there are)."""
    kept = {k: v for k, v in asdict(settings).items() if k != "batch"}
    return {"checkpoint": str(checkpoint), "weights": weights, "arch": arch,
            "settings": json.loads(json.dumps(kept))}


def record_changes(held: Dict, record: Dict) -> List[str]:
    """'<what> <then> -> <now>' for every difference that changes the pictures."""
    changes = []
    if held.get("weights") != record["weights"]:
        changes.append(f"checkpoint {held.get('checkpoint')} (weights "
                       f"{str(held.get('weights'))[:16]}) -> {record['checkpoint']} (weights "
                       f"{record['weights'][:16]})")
    if held.get("arch") != record["arch"]:
        changes.append(f"arch {held.get('arch')} -> {record['arch']}")
    then = held.get("settings") if isinstance(held.get("settings"), dict) else {}
    changes += [f"{key} {then.get(key)} -> {value}" for key, value in record["settings"].items()
                if then.get(key) != value]
    return changes


def claim_out_dir(out_dir, record: Dict) -> None:
    """Resume in `out_dir` only pictures made by the same weights and settings: refuse a
    folder whose record differs, or whose pictures record nothing, naming the difference;
    then write this run's record (before any picture)."""
    out_dir = Path(out_dir)
    path = out_dir / RECORD_NAME
    fix = "use another --out, or delete its pictures to start over"
    if path.is_file():
        try:
            held = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            held = {}
        changes = record_changes(held if isinstance(held, dict) else {}, record)
        if changes:
            raise ValueError(f"--out {out_dir} holds pictures made otherwise ("
                             f"{'; '.join(changes)}), which a resume would keep as this run's: "
                             f"{fix}")
    elif out_dir.is_dir() and any(out_dir.glob("*.png")):
        raise ValueError(f"--out {out_dir} holds pictures that do not record the checkpoint and "
                         f"settings that made them (no {RECORD_NAME}): {fix}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


# --------------------------------------------------------------------- model and layers
def resolve_layers(model: torch.nn.Module, names: Sequence[str]) -> Dict[str, torch.nn.Module]:
    """{name: module} for module names of the model; an unknown name lists the valid ones."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if not n or n not in modules]
    if unknown:
        top = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"unknown layer '{unknown[0]}'; valid layers: {top} (or a dotted "
                         "submodule name such as layer1.0.conv2)")
    return {name: modules[name] for name in names}


class _StopForward(Exception):
    """Raised by a probe once every watched layer has produced its output."""


class LayerProbe:
    """Run the model up to the watched layers only; returns their (first) outputs.

    A module called several times in one forward (e.g. a shared ReLU) is read at its first call.
    Outputs are copied while the forward goes on, as later in-place operations would change them.
    """

    def __init__(self, model: torch.nn.Module, modules: Dict[str, torch.nn.Module]):
        self.model, self.modules = model, modules

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs: Dict[str, torch.Tensor] = {}

        def hook_for(name):
            def hook(_module, _inputs, output):
                if name in outputs:
                    return
                if len(outputs) + 1 == len(self.modules):
                    outputs[name] = output
                    raise _StopForward
                outputs[name] = output.clone()  # later in-place ops (ReLU, +=) would change it
            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in self.modules.items()]
        try:
            self.model(images)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return outputs


def channel_counts(model: torch.nn.Module, modules: Dict[str, torch.nn.Module],
                   device) -> Dict[str, int]:
    """Number of output channels of each layer (one small forward pass)."""
    with torch.no_grad():
        outputs = LayerProbe(model, modules)(torch.zeros(1, 3, 64, 64, device=device))
    counts = {}
    for name in modules:
        out = outputs.get(name)
        if not isinstance(out, torch.Tensor) or out.ndim < 2:
            raise ValueError(f"layer '{name}' does not output a [N, C, ...] tensor; pick a "
                             "convolution, block or stage")
        counts[name] = int(out.shape[1])
    return counts


def affine_layers(model: torch.nn.Module, modules: Dict[str, torch.nn.Module],
                  device) -> List[str]:
    """Layers whose output is an affine function of the image (no nonlinearity before them,
    e.g. a ResNet's `conv1`): their mean activation follows the mean colour, so maximising it
    gives a nearly flat picture."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(1, 3, 64, 64, generator=g).to(device) for _ in range(2))
    probe = LayerProbe(model, modules)
    with torch.no_grad():
        out_a, out_b, out_mid = probe(a), probe(b), probe((a + b) / 2)
    affine = []
    for name in modules:
        expected = (out_a[name] + out_b[name]) / 2
        tolerance = 1e-4 * float(expected.abs().max()) + 1e-6
        if float((out_mid[name] - expected).abs().max()) <= tolerance:
            affine.append(name)
    return affine


def channel_means(output: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean activation of channel `channels[b]` of picture b: [B]."""
    picked = output[torch.arange(len(channels), device=output.device), channels.to(output.device)]
    return picked.reshape(len(channels), -1).mean(dim=1)


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> the network's input (ImageNet mean/std)."""
    return normalise_imagenet(rgb, dtype=rgb.dtype)


class RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward, for a picture whose ReLU gradient is zero everywhere, still passes
    the gradient components that would raise a negative input (Lucid's redirected ReLU)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        negative = x < 0
        relu_grad = grad.masked_fill(negative, 0)
        redirected = grad.masked_fill(negative & (grad > 0), 0)  # descent: grad < 0 raises x
        blocked = relu_grad.flatten(1).abs().amax(dim=1) == 0
        blocked = blocked.view(-1, *([1] * (grad.ndim - 1)))
        return torch.where(blocked, redirected, relu_grad)


@contextmanager
def redirected_relus(model: torch.nn.Module):
    """Every `nn.ReLU` module of `model` uses `RedirectedReLU` inside the block."""
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    inplace = [m.inplace for m in relus]
    handles = []
    try:
        for module in relus:
            module.inplace = False  # the hook needs the input as it was
            handles.append(module.register_forward_hook(
                lambda _m, inputs, _out: RedirectedReLU.apply(inputs[0])))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in zip(relus, inplace):
            module.inplace = flag


# --------------------------------------------------------------------- parameterisation
def picture_generator(seed: int, layer: str, channel: int) -> torch.Generator:
    """A CPU generator for one picture, seeded by (seed, layer, channel) only."""
    state = np.random.SeedSequence([seed, zlib.crc32(layer.encode()), channel]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def fourier_scale(size: int) -> torch.Tensor:
    """1/frequency for each rfft2 coefficient of a size x size picture: [size, size//2 + 1]."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return 1.0 / torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / size)


def initial_spectra(generators: Sequence[torch.Generator], size: int, sd: float) -> torch.Tensor:
    """Real/imaginary parts of the starting spectra: [B, 3, size, size//2 + 1, 2]."""
    shape = (3, size, size // 2 + 1, 2)
    return torch.stack([torch.randn(shape, generator=g) * sd for g in generators])


def spectra_to_rgb(spectra: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Pictures [B, 3, S, S] in (0, 1) from spectra in the decorrelated colour space."""
    size = spectra.shape[2]
    scaled = torch.view_as_complex(spectra) * scale
    decorrelated = torch.fft.irfft2(scaled, s=(size, size), norm="ortho") / 4.0  # Lucid's 4
    colour = COLOUR_CORRELATION_SQRT / COLOUR_CORRELATION_SQRT.norm(dim=0).max()
    rgb = torch.einsum("bchw,dc->bdhw", decorrelated, colour.to(spectra.device))
    return torch.sigmoid(rgb)


# --------------------------------------------------------------------- transformation robustness
def affine_theta(shift: Tuple[float, float], zoom: float, degrees: float, size: int,
                 out_size: int) -> List[List[float]]:
    """affine_grid theta: an out_size view of a size picture, shifted by `shift` px (x, y),
    magnified by `zoom` and rotated by `degrees`, one output pixel = one picture pixel at
    zoom 1 (so with even margins and no shift, zoom or rotation the picture is copied exactly)."""
    k = out_size / size / zoom
    cos, sin = math.cos(math.radians(degrees)) * k, math.sin(math.radians(degrees)) * k
    return [[cos, -sin, 2 * shift[0] / size], [sin, cos, 2 * shift[1] / size]]


def random_affines(generators: Sequence[torch.Generator], settings: FVisSettings) -> torch.Tensor:
    """One random (integer shift, scale, rotation) per picture as affine_grid thetas: [B, 2, 3]."""
    thetas = []
    lo, hi = settings.scale
    for g in generators:
        u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        shift = (round((u[0] * 2 - 1) * settings.jitter), round((u[1] * 2 - 1) * settings.jitter))
        thetas.append(affine_theta(shift, lo + u[2] * (hi - lo), (u[3] * 2 - 1) *
                                   settings.max_degrees, settings.size,
                                   settings.size + settings.margin))
    return torch.tensor(thetas, dtype=torch.float32)


def transform(rgb: torch.Tensor, thetas: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resample each picture through its affine map; outside the picture is grey (0.5)."""
    grid = F.affine_grid(thetas.to(rgb.device), [rgb.shape[0], 3, out_size, out_size],
                         align_corners=False)
    return F.grid_sample(rgb - 0.5, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + 0.5


# --------------------------------------------------------------------- optimisation
def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """[B, 3, S, S] in [0, 1] -> uint8 [B, S, S, 3]."""
    pixels = (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def visualise_channels(probe: LayerProbe, layer: str, channels: Sequence[int],
                       settings: FVisSettings, device, on_step=None) -> np.ndarray:
    """Pictures maximising each channel of `layer`, optimised as one batch: uint8 [B, S, S, 3]."""
    generators = [picture_generator(settings.seed, layer, c) for c in channels]
    spectra = initial_spectra(generators, settings.size, settings.init_sd).to(device)
    spectra.requires_grad_(True)
    scale = fourier_scale(settings.size).to(device)[None, None]
    targets = torch.tensor(list(channels), device=device)
    optimiser = torch.optim.Adam([spectra], lr=settings.lr)
    out_size = settings.size + settings.margin
    for step in range(settings.steps):
        seen = transform(spectra_to_rgb(spectra, scale), random_affines(generators, settings),
                         out_size)
        with redirected_relus(probe.model) if step < settings.redirect_steps else nullcontext():
            activation = channel_means(probe(normalise(seen))[layer], targets)
        optimiser.zero_grad(set_to_none=True)
        (-activation.sum()).backward()
        optimiser.step()
        if on_step is not None:
            on_step()
    with torch.no_grad():
        return to_uint8(spectra_to_rgb(spectra, scale))


def plan(counts: Dict[str, int], channels: Optional[int]) -> List[Tuple[str, int]]:
    """(layer, channel) of every picture: the first `channels` of each layer (default all)."""
    jobs = []
    for layer, count in counts.items():
        wanted = count if channels is None else channels
        if not 1 <= wanted <= count:
            raise ValueError(f"--channels {channels}: layer '{layer}' has {count} channels "
                             f"(valid: 1..{count}, default all)")
        jobs.extend((layer, c) for c in range(wanted))
    return jobs


def existing_picture(out_dir: Path, job: Tuple[str, int], size: int) -> bool:
    """True when the picture was written before (resume); one of another size is an error."""
    path = out_dir / picture_name(*job)
    if not path.is_file():
        return False
    with Image.open(path) as img:  # reads the header only
        if img.size != (size, size):
            raise ValueError(f"{path} is {img.size[0]}x{img.size[1]} px but --size is {size}; "
                             "use another --out folder or delete the old pictures")
    return True


def write_json(path: Path, payload) -> None:
    """Write JSON through a temporary name, so an interrupted run never leaves half a file."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write through a temporary name, so an interrupted run never leaves half a PNG."""
    tmp = path.with_name(path.name + ".partial")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)


def make_fvis(model: torch.nn.Module, layers: Sequence[str], out_dir,
              channels: Optional[int] = None, settings: FVisSettings = FVisSettings(),
              device="cpu", progress: bool = True) -> List[Tuple[str, int]]:
    """Write `<layer>_<channel:04d>.png` for every planned picture; existing PNGs are skipped.

    Returns every planned (layer, channel), written now or before.
    """
    out_dir = Path(out_dir)
    modules = resolve_layers(model, layers)
    jobs = plan(channel_counts(model, modules, device), channels)
    todo = [job for job in jobs if not existing_picture(out_dir, job, settings.size)]
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = []
    for layer in modules:  # one layer per batch: one probe, one objective
        mine = [job for job in todo if job[0] == layer]
        batches += [mine[i:i + settings.batch] for i in range(0, len(mine), settings.batch)]
    with tqdm(total=len(batches) * settings.steps, desc="fvis", unit="step",
              disable=not progress) as bar:
        for batch in batches:
            layer = batch[0][0]
            bar.set_postfix(layer=layer, channels=f"{batch[0][1]}..{batch[-1][1]}")
            probe = LayerProbe(model, {layer: modules[layer]})
            pixels = visualise_channels(probe, layer, [c for _, c in batch], settings, device,
                                        on_step=lambda: bar.update(1))
            for (lay, channel), picture in zip(batch, pixels):
                save_png(picture, out_dir / picture_name(lay, channel))
    return jobs


# --------------------------------------------------------------------- quality
def baseline_pictures(count: int, size: int, seed: int) -> Dict[str, np.ndarray]:
    """Reference pictures uint8 [count, S, S, 3]: uniform noise and random fractals."""
    from dali_pixmix.mixing.fractals import fractal_image

    rng = np.random.default_rng([seed, 7])
    noise = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    fractals = np.stack([fractal_image(np.random.default_rng([seed, 11, i]), size)
                         for i in range(count)])
    return {"noise": noise, "fractal": fractals}


def layer_means(probe: LayerProbe, pictures: np.ndarray, device, batch: int = 32
                ) -> Dict[str, torch.Tensor]:
    """Mean activation of every channel of every watched layer: {layer: [N, C]} (CPU)."""
    chunks: Dict[str, List[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(pictures), batch):
            rgb = torch.from_numpy(pictures[start:start + batch]).to(device)
            rgb = rgb.permute(0, 3, 1, 2).float() / 255
            for name, out in probe(normalise(rgb)).items():
                chunks.setdefault(name, []).append(out.flatten(2).mean(dim=2).cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def ratio(value: float, baseline: float) -> Optional[float]:
    """value / baseline, or None where the baseline is not positive (no meaningful ratio)."""
    return value / baseline if baseline > 1e-8 else None


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    defined = [v for v in values if v is not None]
    return float(np.median(defined)) if defined else None


def measure_quality(model: torch.nn.Module, jobs: Sequence[Tuple[str, int]], out_dir,
                    size: int, device="cpu", seed: int = 0, baseline_count: int = 8) -> Dict:
    """Target-channel activation of each written picture against noise and fractal pictures.

    The pictures are read back from their PNGs (what a mixing bank will hold). Baselines are the
    mean over `baseline_count` pictures of the same size. Returns the summary dictionary.
    """
    out_dir = Path(out_dir)
    layers = list(dict.fromkeys(layer for layer, _ in jobs))
    probe = LayerProbe(model, resolve_layers(model, layers))
    base = {kind: layer_means(probe, pics, device)
            for kind, pics in baseline_pictures(baseline_count, size, seed).items()}
    records = []
    for layer in layers:
        mine = [c for lay, c in jobs if lay == layer]
        pictures = np.stack([np.asarray(Image.open(out_dir / picture_name(layer, c))
                                        .convert("RGB")) for c in mine])
        single = LayerProbe(model, resolve_layers(model, [layer]))
        own = layer_means(single, pictures, device)[layer]
        for row, channel in enumerate(mine):
            records.append(quality_record(layer, channel, float(own[row, channel]),
                                          float(base["noise"][layer][:, channel].mean()),
                                          float(base["fractal"][layer][:, channel].mean())))
    return summarise(records, layers, baseline_count)


def quality_record(layer: str, channel: int, activation: float, noise: float,
                   fractal: float) -> Dict:
    return {"file": picture_name(layer, channel), "layer": layer, "channel": channel,
            "activation": activation, "noise": noise, "fractal": fractal,
            "ratio_noise": ratio(activation, noise), "ratio_fractal": ratio(activation, fractal)}


def summarise(records: List[Dict], layers: Sequence[str], baseline_count: int) -> Dict:
    """Medians overall and per layer; ratios with a non-positive baseline are left out."""
    def medians(rows):
        return {"pictures": len(rows),
                "median_ratio_noise": median([r["ratio_noise"] for r in rows]),
                "median_ratio_fractal": median([r["ratio_fractal"] for r in rows]),
                "undefined_ratios": sum(r[k] is None for r in rows
                                        for k in ("ratio_noise", "ratio_fractal"))}
    per_layer = {layer: medians([r for r in records if r["layer"] == layer]) for layer in layers}
    return {**medians(records), "baseline_pictures": baseline_count, "layers": per_layer,
            "pictures_detail": records}


def write_summary(summary: Dict, out_dir, settings: FVisSettings, checkpoint: str,
                  arch: str, weights: str = "") -> Path:
    """`fvis_summary.json` next to the pictures (settings, checkpoint and its weights'
    identity, per-picture numbers)."""
    path = Path(out_dir) / SUMMARY_NAME
    payload = {"checkpoint": str(checkpoint), "weights": weights, "arch": arch,
               "settings": asdict(settings), **summary}
    write_json(path, payload)
    return path
