"""ImageNet-P evaluation: per-frame top-5 predictions -> FP, T5D, mFR, mT5D, rows and a plot.

Flow per perturbation: list and validate `<root>/<folder>/<wnid>/*.mp4` up front -> each global
rank decodes its strided share of the videos (`video.VideoReader`: DALI on GPU, PyAV on CPU) ->
the model runs on whole frames (no resize, ImageNet mean/std; float16 autocast on CUDA) and
keeps only each frame's top-5 class indices -> ranks gather them -> metrics -> cached as
`<cache_dir>/<folder>.npz` (`evaluation.cache`) so an interrupted run resumes per perturbation.

Difficulty d: noise perturbations read the `<name>_<d>` folders (frames compared with frame 0);
the others compare frames d apart. Normalised figures (FR, T5D, mFR, mT5D) exist for d = 1 only.

Rows (`report.Row`, values in percent unless the metric name says otherwise), task "imagenet_p",
dataset "imagenet_p", n = videos decoded, protocol e.g. "hendrycks:no-resize,difficulty=1,
amp-fp16,dali-nvdec" (the decoder is named because YUV->RGB conversions differ slightly):
  variant=<perturbation>, severity=d: flip_prob, ut5d_ranks (rank units), and for d = 1
                                      fr, t5d (percent of AlexNet)
  variant="mean", severity=d:         flip_prob, ut5d_ranks (means over the evaluated perturbations)
  variant="mean", severity=None:      mfr, mt5d (d = 1 and all 10 test perturbations only)
Videos that fail to decode or have the wrong frame count are left out of the metrics and listed
by name in `<out>/imagenet_p_details.json`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dali_pixmix.distributed import DistInfo, all_gather_objects, broadcast_object
from dali_pixmix.evaluation import cache, report
from dali_pixmix.evaluation.video import (
    VideoClip,
    VideoEntry,
    VideoReader,
    expected_frames,
    list_videos,
    shard,
)
from dali_pixmix.metrics import perturbation as pm
from dali_pixmix.precision import autocast, eval_amp_dtype, precision_name

log = logging.getLogger(__name__)

TASK = "imagenet_p"
KNOWN_PERTURBATIONS = pm.TEST_PERTURBATIONS + pm.VALIDATION_PERTURBATIONS


@dataclass
class PerturbationResult:
    """Top-5 predictions of the decoded videos of one perturbation folder."""
    perturbation: str
    folder: str
    names: List[str]
    labels: np.ndarray             # [videos]
    top5: np.ndarray               # [videos, frames, 5] class indices in rank order
    skipped: List[Tuple[str, str]] = field(default_factory=list)   # (video name, reason)
    from_cache: bool = False

    def flip_prob(self, difficulty: int) -> float:
        return pm.flip_probability(self.top5[..., 0], pm.is_noise(self.perturbation), difficulty)

    def ut5d(self, difficulty: int) -> float:
        return pm.top5_distance(self.top5, pm.is_noise(self.perturbation), difficulty)


def parse_perturbations(spec: str | Sequence[str]) -> List[str]:
    """"test" (the 10 of mFR), "all" (test + validation) or a comma list of known names."""
    if isinstance(spec, str):
        if spec in ("test", "all"):
            return list(pm.TEST_PERTURBATIONS if spec == "test" else KNOWN_PERTURBATIONS)
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [p for p in spec if p not in KNOWN_PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown ImageNet-P perturbation(s) {unknown}: choose from "
                         f"{', '.join(KNOWN_PERTURBATIONS)} (or 'test' / 'all')")
    return list(spec)


def perturbation_folder(perturbation: str, difficulty: int) -> str:
    """Folder of a perturbation at a difficulty: noise uses `<name>_<d>` for d > 1."""
    if difficulty not in (1, 2, 3):
        raise ValueError(f"ImageNet-P difficulty must be 1, 2 or 3, got {difficulty}")
    if pm.is_noise(perturbation) and difficulty > 1:
        return f"{perturbation}_{difficulty}"
    return perturbation


def list_all(root: str | Path, perturbations: Sequence[str], difficulty: int,
             classes: Sequence[str]) -> Dict[str, List[VideoEntry]]:
    """Validate the whole folder tree before any decoding: perturbation -> its videos."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet-P root not found: {root} (pass --root <folder with "
                                "one sub-folder per perturbation>)")
    known = {perturbation_folder(p, d) for p in KNOWN_PERTURBATIONS for d in (1, 2, 3)}
    strangers = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in known)
    if strangers:
        log.warning("%s: ignoring folders that are not ImageNet-P perturbations: %s",
                    root, strangers)
    return {p: list_videos(root / perturbation_folder(p, difficulty), classes)
            for p in perturbations}


def batched_clips(clips: Iterable[VideoClip], batch_frames: int) -> Iterator[List[VideoClip]]:
    """Group whole videos until a group holds at least `batch_frames` frames (same frame size)."""
    group, frames = [], 0
    for clip in clips:
        if group and clip.frames.shape[1:] != group[0].frames.shape[1:]:
            yield group
            group, frames = [], 0
        group.append(clip)
        frames += clip.frames.shape[0]
        if frames >= batch_frames:
            yield group
            group, frames = [], 0
    if group:
        yield group


@torch.no_grad()
def predict_top5(model: torch.nn.Module, clips: Iterable[VideoClip], device: torch.device,
                 batch_frames: int = 256, amp: bool = True) -> Dict[str, Tuple[int, np.ndarray]]:
    """name -> (label, top-5 class indices [frames, 5] as int32) for every clip."""
    out = {}
    for group in batched_clips(clips, batch_frames):
        frames = torch.cat([c.frames for c in group])
        if device.type == "cuda":  # the suite's GPU models are channels_last
            frames = frames.contiguous(memory_format=torch.channels_last)
        with autocast(device, eval_amp_dtype(device, amp)):
            logits = model(frames)
        top5 = logits.float().topk(pm.TOP_K, dim=1).indices.to(torch.int32).cpu().numpy()
        start = 0
        for clip in group:
            stop = start + clip.frames.shape[0]
            out[clip.name] = (clip.label, top5[start:stop])
            start = stop
    return out


def evaluate_folder(model, entries: Sequence[VideoEntry], perturbation: str, folder: str,
                    info: DistInfo, *, batch_frames: int, amp: bool, backend: str,
                    num_threads: int = 2, progress: bool = False) -> PerturbationResult:
    """Decode this rank's share of `entries`, predict, and gather every rank's results."""
    mine = shard(entries, info.rank, info.world_size)
    num_frames = expected_frames(folder)
    reader = VideoReader(mine, num_frames, info.device, normalize=True, backend=backend,
                         batch_videos=max(1, round(batch_frames / num_frames)),
                         workers=num_threads)
    clips: Iterable[VideoClip] = reader
    if progress and info.is_main:
        from tqdm import tqdm
        clips = tqdm(reader, total=len(mine), desc=folder, unit="video", leave=False)
    local = predict_top5(model, clips, info.device, batch_frames, amp)
    parts = all_gather_objects((local, reader.skipped))
    merged = {k: v for part, _ in parts for k, v in part.items()}
    skipped = sorted(s for _, part in parts for s in part)
    names = [e.name for e in entries if e.name in merged]
    if not names:
        raise ValueError(f"{folder}: none of the {len(entries)} videos could be decoded "
                         f"(first failure: {skipped[0] if skipped else '?'})")
    return PerturbationResult(
        perturbation, folder, names, np.array([merged[n][0] for n in names], dtype=np.int64),
        np.stack([merged[n][1] for n in names]), skipped)


CACHE_FIELDS = ("names", "labels", "top5", "skipped_names", "skipped_reasons")


def save_result(result: PerturbationResult, path: Path, fingerprint: str) -> None:
    """Write one perturbation's predictions to its cache (plain arrays, no pickles)."""
    skipped = result.skipped or [("", "")]
    cache.save(path, fingerprint, {
        "names": np.array(result.names), "labels": result.labels, "top5": result.top5,
        "skipped_names": np.array([s[0] for s in skipped]),
        "skipped_reasons": np.array([s[1] for s in skipped])})


def load_result(path: Path, fingerprint: str, perturbation: str, folder: str,
                entries: Sequence[VideoEntry]) -> Optional[PerturbationResult]:
    """A cached result if it was made by the same model/settings for the same videos."""
    data = cache.load(path, fingerprint, CACHE_FIELDS)
    if data is None:
        return None
    skipped = [(str(n), str(r)) for n, r in zip(data["skipped_names"], data["skipped_reasons"])
               if n]
    names = [str(n) for n in data["names"]]
    if sorted(names + [s[0] for s in skipped]) != sorted(e.name for e in entries):
        log.warning("%s lists other videos than %s now holds: recomputing", path, folder)
        return None
    return PerturbationResult(perturbation, folder, names, data["labels"], data["top5"], skipped,
                              from_cache=True)


def evaluate_perturbation(model, entries: Sequence[VideoEntry], perturbation: str, difficulty: int,
                          info: DistInfo, *, cache_dir: Optional[Path], fingerprint: str,
                          **kwargs) -> PerturbationResult:
    """One perturbation, resumed from its cache when possible (the main rank decides)."""
    folder = perturbation_folder(perturbation, difficulty)
    path = cache.cache_file(cache_dir, folder) if cache_dir else None
    cached = None
    if path and info.is_main:
        cached = load_result(path, fingerprint, perturbation, folder, entries)
    cached = broadcast_object(cached)
    if cached is not None:
        return cached
    result = evaluate_folder(model, entries, perturbation, folder, info, **kwargs)
    if path and info.is_main:
        save_result(result, path, fingerprint)
    return result


def protocol_name(difficulty: int, device: torch.device, amp: bool, backend: str) -> str:
    """How the numbers were made: unresized frames, difficulty, precision, video decoder."""
    decoder = "pyav" if backend == "pyav" else (
        "dali-nvdec" if device.type == "cuda" else "dali-cpu")
    precision = precision_name(eval_amp_dtype(device, amp))
    return f"hendrycks:no-resize,difficulty={difficulty},{precision},{decoder}"


def summarize(results: Dict[str, PerturbationResult], difficulty: int) -> Dict[str, Dict]:
    """perturbation -> {flip_prob, ut5d (raw), fr, t5d (percent of AlexNet; d = 1 only),
    videos, skipped, from_cache}, plus "mean" -> {mfr, mt5d} when they are defined."""
    table = {}
    for name, res in results.items():
        fp, ut5d = res.flip_prob(difficulty), res.ut5d(difficulty)
        entry = {"folder": res.folder, "flip_prob": fp, "ut5d": ut5d, "videos": len(res.names),
                 "skipped": [list(s) for s in res.skipped], "from_cache": res.from_cache}
        if difficulty == 1:
            entry.update(fr=pm.flip_rate(name, fp), t5d=pm.normalised_top5_distance(name, ut5d))
        table[name] = entry
    if difficulty == 1 and all(p in table for p in pm.TEST_PERTURBATIONS):
        table["mean"] = {"mfr": pm.mfr({p: table[p]["flip_prob"] for p in table}),
                         "mt5d": pm.mt5d({p: table[p]["ut5d"] for p in table})}
    return table


def result_rows(table: Dict[str, Dict], difficulty: int, protocol: str) -> List[report.Row]:
    """Tidy rows (see the module docstring) from `summarize`'s table."""
    rows, per = [], {k: v for k, v in table.items() if k != "mean"}
    for name, e in per.items():
        values = {"flip_prob": 100 * e["flip_prob"], "ut5d_ranks": e["ut5d"]}
        values.update({k: e[k] for k in ("fr", "t5d") if k in e})
        rows += [report.row(TASK, TASK, metric, value, e["videos"], protocol, name, difficulty)
                 for metric, value in values.items()]
    videos = sum(e["videos"] for e in per.values())
    means = {"flip_prob": 100 * np.mean([e["flip_prob"] for e in per.values()]),
             "ut5d_ranks": np.mean([e["ut5d"] for e in per.values()])}
    rows += [report.row(TASK, TASK, metric, value, videos, protocol, "mean", difficulty)
             for metric, value in means.items()]
    if "mean" in table:
        rows += [report.row(TASK, TASK, m, table["mean"][m], videos, protocol, "mean")
                 for m in ("mfr", "mt5d")]
    return rows


def plot_flip_rates(table: Dict[str, Dict], path: str | Path) -> Optional[Path]:
    """Normalised flip rate per perturbation beside the paper's ResNet-50 (PixMix Table 12)."""
    names = [p for p in pm.TEST_PERTURBATIONS if p in table and "fr" in table[p]]
    if not names:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3.5))
    ax.bar(x - 0.2, [table[p]["fr"] for p in names], width=0.4, label="this model")
    ax.bar(x + 0.2, [pm.RESNET50_FR[p] for p in names], width=0.4, color="tab:gray",
           label="ResNet-50 (PixMix paper, Table 12)")
    ax.axhline(100, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="flip rate FR (%) (AlexNet = 100)", title="ImageNet-P flip rate per perturbation")
    ax.legend(fontsize=8)
    return report.save_figure(fig, plt, path)


def run_imagenet_p(model: torch.nn.Module, classes: Sequence[str], root: str | Path,
                   info: DistInfo, *, cache_dir: Optional[str | Path], difficulty: int = 1,
                   perturbations: str | Sequence[str] = "test", batch_size: int = 256,
                   amp: bool = True, backend: str = "auto", num_threads: int = 2,
                   fingerprint: str = "", progress: bool = True
                   ) -> Tuple[List[report.Row], Dict[str, Dict]]:
    """Evaluate ImageNet-P: (tidy rows, `summarize` table). Writes only the cache.

    `batch_size` counts frames per forward pass on THIS rank (`run_imagenet_p_task` passes
    the per-rank share of the global `--batch-size`). `fingerprint` identifies the model (e.g.
    checkpoint path, size, mtime); cached predictions made under another fingerprint or setting
    are recomputed. No cache when `cache_dir` is None.
    """
    from dali_pixmix.evaluation.video import resolve_backend

    if len(classes) < pm.TOP_K:
        raise ValueError(f"the top-5 distance needs a model with at least {pm.TOP_K} classes; "
                         f"this one has {len(classes)}")
    backend = resolve_backend(backend, info.device)
    chosen = parse_perturbations(perturbations)
    listing = list_all(root, chosen, difficulty, classes)
    protocol = protocol_name(difficulty, info.device, amp, backend)
    model = model.to(info.device).eval()
    results = {}
    for name in chosen:
        results[name] = evaluate_perturbation(
            model, listing[name], name, difficulty, info,
            cache_dir=Path(cache_dir) if cache_dir else None,
            fingerprint=f"{fingerprint}|{protocol}", batch_frames=batch_size, amp=amp,
            backend=backend, num_threads=num_threads, progress=progress)
    table = summarize(results, difficulty)
    return result_rows(table, difficulty, protocol), table


def write_outputs(rows: Sequence[report.Row], table: Dict[str, Dict], out_dir: str | Path) -> Path:
    """`<out>/imagenet_p_details.json` (per perturbation, skipped videos) and the FR plot.

    The rows themselves go to `<out>/results/imagenet_p.json` (written by the suite's CLI);
    the details stay outside results/, which holds row files only.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    details = {"protocol": rows[0].protocol if rows else "", "perturbations": table}
    path = out_dir / f"{TASK}_details.json"
    path.write_text(json.dumps(details, indent=1) + "\n")
    plot_flip_rates(table, out_dir / "plots" / f"{TASK}_flip_rates.png")
    return path


def summary_line(table: Dict[str, Dict], rows: Sequence[report.Row], details: Path) -> str:
    """One line: mFR/mT5D (or the mean flip probability), videos, skips, cache hits."""
    per = {k: v for k, v in table.items() if k != "mean"}
    videos = sum(v["videos"] for v in per.values())
    skipped = sum(len(v["skipped"]) for v in per.values())
    cached = sum(v["from_cache"] for v in per.values())
    if "mean" in table:
        head = f"mFR {table['mean']['mfr']:.1f}  mT5D {table['mean']['mt5d']:.1f}"
    else:
        mean = next(r for r in rows if r.variant == "mean" and r.metric == "flip_prob")
        head = (f"mean flip probability {mean.value:.2f}% (no mFR/mT5D: needs the 10 test "
                "perturbations at difficulty 1)")
    return (f"ImageNet-P: {head} over {len(per)} perturbations, {videos} videos, "
            f"{skipped} skipped, {cached} from cache (details: {details})")


def run_imagenet_p_task(ev, root: str | Path, *, difficulty: int = 1,
                        perturbations: str | Sequence[str] = "test", backend: str = "auto",
                        amp: bool = True) -> List[report.Row]:
    """ImageNet-P with an `evaluation.Evaluator` (model, classes, ranks, out, batch size: its
    per-rank share of the global batch counts frames)."""
    rows, table = run_imagenet_p(
        ev.model, ev.classes, root, ev.dist, cache_dir=ev.out / "cache" / TASK,
        difficulty=difficulty, perturbations=perturbations, batch_size=ev.rank_batch_size,
        amp=amp, backend=backend, num_threads=ev.num_threads, fingerprint=repr(ev.model_key),
        progress=ev.progress)
    if ev.dist.is_main:
        ev.log(summary_line(table, rows, write_outputs(rows, table, ev.out)))
    return rows
