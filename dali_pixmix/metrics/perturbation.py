"""ImageNet-P prediction-consistency metrics: flip probability, top-5 distance, mFR, mT5D.

Conventions (Hendrycks & Dietterich, ICLR 2019, appendix E, and their `ImageNet-P/test.py`):

- A video is a sequence of T frames. Noise perturbations (name contains "noise") compare every
  frame j >= 1 with frame 0, the clean frame, which stays the reference at every difficulty (the
  harder noise levels are separate videos in `<name>_<d>` folders). The other perturbations
  compare frames `difficulty` apart: the reference walks the sub-sequences i, i+d, i+2d, ... for
  every start offset i < d and compares neighbours, i.e. every pair (t, t+d). All pairs of a video
  are pooled into one mean per video; the result is the mean over videos.
- Top-5 distance: with the reference frame's top-5 classes in rank order and sigma(j) the 1-based
  rank of the j-th of them in the new frame, d = sum_{j=1..5} |(j-1) - min(sigma(j)-1, 5)|.
  The reference code computes it as |c[j-1] - c[sigma(j)-1]| with c = cumsum([0, 1,1,1,1,1, 0, ...])
  = [0, 1, 2, 3, 4, 5, 5, 5, ...], so any rank beyond the top 5 counts as 0-based rank 5. Only
  the reference frame's top 5 enter, so each frame's top-5 class indices are all that is needed:
  a class absent from the new top 5 contributes |(j-1) - 5|. d = 0 for identical rankings and
  at most 5+4+3+2+1 = 15 when the two top-5 sets are disjoint.
- Flip probabilities are fractions; the AlexNet constants are stored as fractions too
  (the paper prints them in percent). Top-5 distances are in rank units. mFR and mT5D are
  percentages of AlexNet (x100), averaged over the 10 test perturbations.
- CIFAR-P has no AlexNet constants: `mean_flip_probability` (percent) and `mean_top5_distance`
  (rank units) are the unnormalised means the PixMix paper's CIFAR tables report
  (`metrics.cifar`).
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

TEST_PERTURBATIONS: Tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
    "brightness", "translate", "rotate", "tilt", "scale")
VALIDATION_PERTURBATIONS: Tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "shear")

# AlexNet, difficulty 1 (benchmark paper, appendix E): flip probability as a fraction.
ALEXNET_FP: Dict[str, float] = {
    "gaussian_noise": 0.2365, "shot_noise": 0.3006, "motion_blur": 0.0930, "zoom_blur": 0.0594,
    "snow": 0.1193, "brightness": 0.0489, "translate": 0.1101, "rotate": 0.1310,
    "tilt": 0.0705, "scale": 0.2353,
    "speckle_noise": 0.1865, "gaussian_blur": 0.0278, "spatter": 0.0505, "shear": 0.1066,
}
# AlexNet, difficulty 1: unnormalised top-5 distance in rank units.
ALEXNET_T5D: Dict[str, float] = {
    "gaussian_noise": 4.77, "shot_noise": 5.76, "motion_blur": 1.93, "zoom_blur": 1.34,
    "snow": 2.42, "brightness": 1.19, "translate": 2.63, "rotate": 2.95,
    "tilt": 1.75, "scale": 4.48,
    "speckle_noise": 3.89, "gaussian_blur": 0.70, "spatter": 1.26, "shear": 2.48,
}
# ResNet-50 normalised flip rate per test perturbation, percent (PixMix paper, Table 12).
RESNET50_FR: Dict[str, float] = dict(zip(TEST_PERTURBATIONS,
                                         (59, 58, 65, 72, 63, 62, 44, 52, 57, 48)))

TOP_K = 5


def is_noise(perturbation: str) -> bool:
    """Noise perturbations compare against the clean first frame (the name contains "noise")."""
    return "noise" in perturbation


def frame_pairs(num_frames: int, noise: bool, difficulty: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """(reference, compared) frame indices of every pair a video contributes."""
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    if noise:
        new = np.arange(1, num_frames)
        return np.zeros_like(new), new
    ref = np.arange(0, num_frames - difficulty)
    if ref.size == 0:
        raise ValueError(f"{num_frames} frames are too few for difficulty {difficulty}")
    return ref, ref + difficulty


def _check_frames(array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim or array.shape[0] == 0 or array.shape[1] < 2:
        shape = "[videos, frames]" if ndim == 2 else "[videos, frames, 5]"
        raise ValueError(f"{what} must have shape {shape} "
                         f"with >= 1 video and >= 2 frames, got {array.shape}")
    return array


def per_video_flips(predictions: np.ndarray, noise: bool, difficulty: int = 1) -> np.ndarray:
    """Fraction of flipped top-1 predictions of each video, shape [videos]."""
    predictions = _check_frames(predictions, 2, "predictions")
    ref, new = frame_pairs(predictions.shape[1], noise, difficulty)
    return (predictions[:, ref] != predictions[:, new]).mean(axis=1)


def flip_probability(predictions: np.ndarray, noise: bool, difficulty: int = 1) -> float:
    """Flip probability FP (a fraction) of top-1 classes `predictions` [videos, frames]."""
    return float(per_video_flips(predictions, noise, difficulty).mean())


def pair_top5_distance(reference: np.ndarray, compared: np.ndarray) -> np.ndarray:
    """Top-5 distance between top-5 lists [..., 5] (classes in rank order) of two frames.

    A model with fewer than 5 classes fills the missing slots with -1: they are no class, so
    they add nothing (every real class is then in both lists and moves by its rank change)."""
    match = reference[..., :, None] == compared[..., None, :]          # [..., 5 ref, 5 new]
    rank_in_new = np.where(match.any(axis=-1), match.argmax(axis=-1), TOP_K)  # 0-based, clipped
    moved = np.abs(np.arange(TOP_K) - np.minimum(rank_in_new, TOP_K))
    return np.where(reference >= 0, moved, 0).sum(axis=-1)


def per_video_top5_distance(rankings: np.ndarray, noise: bool, difficulty: int = 1) -> np.ndarray:
    """Mean top-5 distance of each video, shape [videos]; `rankings` is [videos, frames, 5]."""
    rankings = _check_frames(rankings, 3, "rankings")
    if rankings.shape[2] != TOP_K:
        raise ValueError(f"rankings must list the top {TOP_K} classes per frame, "
                         f"got {rankings.shape[2]}")
    ref, new = frame_pairs(rankings.shape[1], noise, difficulty)
    return pair_top5_distance(rankings[:, ref], rankings[:, new]).mean(axis=1)


def top5_distance(rankings: np.ndarray, noise: bool, difficulty: int = 1) -> float:
    """Unnormalised top-5 distance uT5D (rank units) of `rankings` [videos, frames, 5]."""
    return float(per_video_top5_distance(rankings, noise, difficulty).mean())


def _require_all(values: Mapping[str, float], perturbations: Sequence[str], what: str) -> None:
    missing = [p for p in perturbations if p not in values]
    if missing:
        raise ValueError(f"{what} needs all {len(perturbations)} test perturbations; missing: "
                         f"{', '.join(missing)} (evaluate them, or report per-perturbation values)")


def _normalised_mean(values: Mapping[str, float], alexnet: Mapping[str, float], what: str) -> float:
    _require_all(values, TEST_PERTURBATIONS, what)
    return 100.0 * float(np.mean([values[p] / alexnet[p] for p in TEST_PERTURBATIONS]))


def flip_rate(perturbation: str, fp: float) -> float:
    """Normalised flip rate FR_p = FP_p / FP_p(AlexNet), in percent (difficulty 1 only)."""
    return 100.0 * fp / ALEXNET_FP[perturbation]


def normalised_top5_distance(perturbation: str, ut5d: float) -> float:
    """Normalised T5D_p = uT5D_p / uT5D_p(AlexNet), in percent (difficulty 1 only)."""
    return 100.0 * ut5d / ALEXNET_T5D[perturbation]


def mfr(fp_by_perturbation: Mapping[str, float]) -> float:
    """Mean flip rate in percent over the 10 test perturbations; FP values are fractions."""
    return _normalised_mean(fp_by_perturbation, ALEXNET_FP, "mFR")


def mt5d(t5d_by_perturbation: Mapping[str, float]) -> float:
    """Mean top-5 distance in percent of AlexNet over the 10 test perturbations (raw uT5D in)."""
    return _normalised_mean(t5d_by_perturbation, ALEXNET_T5D, "mT5D")


def mean_flip_probability(fp_by_perturbation: Mapping[str, float],
                          perturbations: Sequence[str] = TEST_PERTURBATIONS) -> float:
    """Unnormalised mFR: 100 x the mean flip probability (fractions in) over `perturbations`,
    in percent; the PixMix paper's CIFAR-P convention (no AlexNet constants exist there)."""
    _require_all(fp_by_perturbation, perturbations, "the mean flip probability")
    return 100.0 * float(np.mean([fp_by_perturbation[p] for p in perturbations]))


def mean_top5_distance(t5d_by_perturbation: Mapping[str, float],
                       perturbations: Sequence[str] = TEST_PERTURBATIONS) -> float:
    """Unnormalised mT5D: the mean raw top-5 distance uT5D over `perturbations`, in rank units
    (as uT5D itself); the PixMix paper's CIFAR-P convention."""
    _require_all(t5d_by_perturbation, perturbations, "the mean top-5 distance")
    return float(np.mean([t5d_by_perturbation[p] for p in perturbations]))
