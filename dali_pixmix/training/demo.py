"""The README demo: generated data before training, and the results table after it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from dali_pixmix.training.cifar import cifar_demo_rows, is_cifar, prepare_cifar_demo

from ..config import Config
from ..distributed import DistInfo, barrier
from ..progress import to_terminal


def prepare_demo_data(cfg: Config, dist: DistInfo) -> None:
    """Generate the demo dataset and fractals once (rank 0) and point the config at them."""
    if not cfg.demo.enabled:
        return
    if is_cifar(cfg):
        return prepare_cifar_demo(cfg, dist)
    from dali_pixmix.data.synthetic import make_synthetic_imagenet
    from dali_pixmix.mixing.fractals import make_fractals

    root, demo = Path(cfg.demo.root), cfg.demo
    fractal_dir = root / "fractals"
    if dist.is_main:
        make_synthetic_imagenet(root / "imagenet", num_classes=demo.num_classes,
                                train_per_class=demo.train_per_class,
                                val_per_class=demo.val_per_class, seed=0, min_size=demo.min_size,
                                max_size=demo.max_size, progress=to_terminal())
        if len(list(fractal_dir.glob("fractal_*.png"))) < demo.fractals:
            make_fractals(fractal_dir, n=demo.fractals, size=max(cfg.pixmix.bank_size, 64), seed=0,
                          progress=to_terminal())
    barrier()
    cfg.data.train = cfg.data.train or str(root / "imagenet" / "train")
    cfg.data.val = cfg.data.val or str(root / "imagenet" / "val")
    cfg.pixmix.mixing_set = cfg.pixmix.mixing_set or str(fractal_dir)


def demo_anomaly_rows(cfg: Config, dist: DistInfo, final_path: Path) -> List[tuple]:
    """Demo only: anomaly detection with the evaluation suite, validation images vs generated
    Gaussian/Rademacher/Blobs noise; (name, value) rows of the mean AUROC per score (from the
    prediction cache in `<train.output_dir>/eval` when these weights made it). CIFAR:
    `training.cifar.cifar_demo_rows`, the CIFAR safety suite."""
    from dali_pixmix.evaluation.runner import Evaluator
    from dali_pixmix.evaluation.tasks import run_ood

    if is_cifar(cfg):
        return cifar_demo_rows(cfg, dist, final_path)
    ev = Evaluator.from_checkpoint(final_path, out=Path(cfg.train.output_dir) / "eval",
                                   arch=cfg.model.arch, dist=dist,
                                   batch_size=cfg.eval.batch_size,
                                   resize=cfg.data.val_resize, crop=cfg.data.val_crop,
                                   num_threads=cfg.data.num_threads, progress=False)
    rows = run_ood(ev, cfg.data.val, {}, synthetic=True)
    return [(f"anomaly detection AUROC, {r.variant} (%)", f"{r.value:.1f}")
            for r in rows if r.dataset == "mean" and r.metric == "auroc"]


def results_table(val: Dict[str, Any], cfg: Config, extra: Sequence[tuple] = ()) -> str:
    """A small Markdown table of the final validation metrics (plus `extra` (name, value) rows)."""
    rms = "n/a" if val["rms"] is None else f"{val['rms']:.2f}"
    rows = [("top-1 accuracy (%)", f"{val['top1']:.2f}"),
            ("top-5 accuracy (%)", f"{val['top5']:.2f}"),
            ("chance top-1 (%)", f"{val['chance_top1']:.2f}"), ("RMS calibration error (%)", rms),
            ("ECE, 15 bins (%)", f"{val['ece15']:.2f}"), ("validation loss", f"{val['loss']:.4f}"),
            ("validation images", str(val["n"])), *extra]
    head = f"| {cfg.model.arch}, augment.method={cfg.augment.method} | value |"
    lines = [head, "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + f"\n(RMS: {val['rms_note']})"
