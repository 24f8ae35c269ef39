"""CIFAR-10 / CIFAR-100 on the package's one trainer (`data.dataset` cifar10 | cifar100).

What differs from ImageNet training, and only that:
- the data: `data.root` holds the dataset in either official format (`data.cifar.read_cifar`);
  the train split is held in memory (uint8 [N, 32, 32, 3]) and the run's `samples` is that
  `CifarSplit`;
- the loader: `pipelines.loaders.make_array_train_loader` (the same `TrainLoader`, data order,
  DALI state in the checkpoint and resume as ImageNet's), running the reference's CIFAR recipe
  (RandomCrop(32, padding=4) + flip, the method, mean = std = 0.5);
- validation: the test split, predicted from memory by the evaluation runner
  (`Evaluator.infer_arrays`) with CIFAR's normalisation;
- the demo: generated CIFAR data (train/test in both formats and the C, C-bar and P stand-ins,
  `evaluation.synthetic_cifar`) and a fractal mixing set, made once; at its end the CIFAR
  safety suite (`evaluation.cifar`) on the final weights, PGD included.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import List, Tuple

from dali_pixmix.data.cifar import CIFAR_MEAN, CIFAR_STD, CifarSplit, read_cifar

from ..config import Config
from ..distributed import DistInfo, barrier
from .state import log

# The demo attacks at most this many test pictures with PGD (evenly spaced; labelled as a
# subset when the test split is larger): 20 steps per picture are slow on a CPU.
DEMO_PGD_PICTURES = 200


def is_cifar(cfg: Config) -> bool:
    return cfg.data.dataset != "imagenet"


def read_train_split(cfg: Config) -> Tuple[List[str], CifarSplit]:
    """(class names, the train split in memory) of data.root; one-line errors name the
    folder or file and what was expected (`data.cifar.CifarDataError`)."""
    train = read_cifar(cfg.data.root, cfg.data.dataset, "train")
    return list(train.classes), train


def loader_factory(run):
    """`make_array_train_loader` over the run's train split (the CIFAR recipe), to be called
    with the loader settings that ImageNet's `make_train_loader` takes."""
    from dali_pixmix.pipelines.loaders import make_array_train_loader

    split: CifarSplit = run.samples
    return partial(make_array_train_loader, split.images, split.labels)


def build_cifar_validation(run) -> None:
    """The test split in memory and the evaluation runner over the model being trained, with
    CIFAR's normalisation (the one evaluation path)."""
    from dali_pixmix.evaluation.runner import Evaluator

    cfg = run.cfg
    test = read_cifar(cfg.data.root, cfg.data.dataset, "test")
    if list(test.classes) != list(run.classes):  # one meta file: a mismatch is a broken folder
        raise ValueError(f"{test.folder}: the test split's classes differ from the train "
                         "split's; extract the archive again")
    run.val_images, run.val_labels = test.images, test.labels.tolist()
    run.evaluator = Evaluator(run.raw_model, run.classes, batch_size=cfg.eval.batch_size,
                              num_threads=cfg.data.num_threads, dist=run.dist, progress=False,
                              normalisation=(CIFAR_MEAN, CIFAR_STD))


# ----------------------------------------------------------------------------- the demo
def prepare_cifar_demo(cfg: Config, dist: DistInfo) -> None:
    """Generate (rank 0, once) the demo's CIFAR suite under demo.root unless data.root is
    given, and its fractal mixing set unless pixmix.mixing_set is; point the config at them."""
    from dali_pixmix.evaluation.synthetic_cifar import make_synthetic_cifar_suite
    from dali_pixmix.mixing.fractals import make_fractals

    root, demo = Path(cfg.demo.root), cfg.demo
    fractal_dir = root / "fractals"
    if dist.is_main:
        if not cfg.data.root:
            make_synthetic_cifar_suite(root, cfg.data.dataset, num_classes=demo.num_classes,
                                       train_per_class=demo.train_per_class,
                                       test_per_class=demo.val_per_class, seed=0)
        if not cfg.pixmix.mixing_set and \
                len(list(fractal_dir.glob("fractal_*.png"))) < demo.fractals:
            make_fractals(fractal_dir, n=demo.fractals, size=max(cfg.pixmix.bank_size, 64),
                          seed=0)
    barrier()
    cfg.data.root = cfg.data.root or str(root)
    cfg.pixmix.mixing_set = cfg.pixmix.mixing_set or str(fractal_dir)


def cifar_demo_rows(cfg: Config, dist: DistInfo, final_path: Path) -> List[tuple]:
    """Demo only: the CIFAR safety suite (`evaluation.cifar`) on the final weights, with the
    C / C-bar / P sets found under data.root (the demo's generated stand-ins), PGD on at most
    `DEMO_PGD_PICTURES` test pictures and the generated anomaly sets; logs its Table 7/8
    layout (the files, and the prediction cache a rerun reads, go to
    <train.output_dir>/eval/) and returns (name, value) rows of the mean anomaly-detection
    AUROC per score for the results table."""
    from dali_pixmix.evaluation.cifar import CifarSuite, discover_sets, evaluate_cifar_checkpoint
    from dali_pixmix.evaluation.pgd import PgdSettings

    found = discover_sets(cfg.data.root, cfg.data.dataset)
    suite = CifarSuite(root=cfg.data.root, c=found.get("c"), cbar=found.get("cbar"),
                       p=found.get("p"), pgd=PgdSettings(count=DEMO_PGD_PICTURES),
                       bin_size=cfg.eval.calibration_bin_size)
    result = evaluate_cifar_checkpoint(
        final_path, Path(cfg.train.output_dir) / "eval", suite,
        name=f"{cfg.model.arch}, {cfg.augment.method}", arch=cfg.model.arch, dist=dist,
        batch_size=cfg.eval.batch_size, num_threads=cfg.data.num_threads, progress=False)
    log(dist, result.markdown)
    return [(f"anomaly detection AUROC, {r.variant} (%)", f"{r.value:.1f}") for r in result.rows
            if r.task == "cifar_ood" and r.dataset == "mean" and r.metric == "auroc"]
