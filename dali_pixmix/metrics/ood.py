"""Anomaly (out-of-distribution) detection metrics and scores.

Convention: a HIGHER score means MORE ANOMALOUS and anomalies (out-of-distribution examples)
are the POSITIVE class, as in the outlier-exposure reference code and OpenOOD. All metrics are
fractions. Scores: MSP = -max softmax probability, MaxLogit = -max logit,
Energy = -logsumexp(logits) (the free energy at temperature 1).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

__all__ = ["DIRECTION", "FPR95_CONVENTION", "OOD_PROTOCOL", "SCORES", "ood_metrics",
           "fpr_at_recall", "msp_score", "max_logit_score", "energy_score"]

DIRECTION = ("higher score = more anomalous; anomalies (OOD) are the positive class; "
             "fpr95 = fraction of in-distribution examples flagged at the threshold whose "
             "anomaly recall is closest to 0.95, the lowest such threshold when several give "
             "the same recall (outlier-exposure's fpr_and_fdr_at_recall)")
# How FPR95 picks its threshold, as stated in every OOD result row's protocol.
FPR95_CONVENTION = "fpr95@recall-closest-to-0.95,lowest-threshold-among-equal-recall"
OOD_PROTOCOL = f"anomaly-score-higher-is-anomalous;ood-positive;{FPR95_CONVENTION}"


def _scores(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: OOD metrics need in- and out-of-distribution scores")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return arr


def fpr_at_recall(labels: np.ndarray, scores: np.ndarray, recall: float = 0.95) -> float:
    """False-positive rate at the operating point whose recall is closest to `recall`.

    The outlier-exposure reference convention (`fpr_and_fdr_at_recall`): candidate points are
    the distinct score thresholds down to the first one that catches every anomaly; among the
    points closest to `recall` the one with the LOWEST threshold wins. So on a plateau of
    thresholds with the same recall (in-distribution scores between two anomalies) the FPR is
    the plateau's largest, not the FPR where that recall is first reached, and a tie between a
    recall below and one above goes to the higher recall.
    """
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fpr, tpr = fpr[1:], tpr[1:]  # drop sklearn's (0, 0) point above the highest score
    last = int(np.argmax(tpr >= 1.0))
    fpr, tpr = fpr[:last + 1], tpr[:last + 1]
    distance = np.abs(tpr - recall)
    best = np.flatnonzero(np.isclose(distance, distance.min(), rtol=0, atol=1e-12))[-1]
    return float(fpr[best])


def ood_metrics(in_scores, out_scores) -> Dict[str, float]:
    """AUROC, AUPR (average precision, anomalies positive) and FPR95 as fractions."""
    ins, outs = _scores(in_scores, "in_scores"), _scores(out_scores, "out_scores")
    labels = np.r_[np.zeros(ins.size), np.ones(outs.size)]
    scores = np.r_[ins, outs]
    return {"auroc": float(roc_auc_score(labels, scores)),
            "aupr": float(average_precision_score(labels, scores)),
            "fpr95": fpr_at_recall(labels, scores, 0.95)}


def _logits(logits) -> torch.Tensor:
    t = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    if t.ndim != 2:
        raise ValueError(f"expected logits of shape [N, classes], got {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float64)


def msp_score(logits) -> np.ndarray:
    """Anomaly score -max softmax probability (Hendrycks & Gimpel)."""
    return (-torch.softmax(_logits(logits), dim=1).amax(dim=1)).numpy()


def max_logit_score(logits) -> np.ndarray:
    """Anomaly score -max logit."""
    return (-_logits(logits).amax(dim=1)).numpy()


def energy_score(logits) -> np.ndarray:
    """Anomaly score -logsumexp(logits), i.e. the free energy (higher = more anomalous)."""
    return (-torch.logsumexp(_logits(logits), dim=1)).numpy()


SCORES = {"msp": msp_score, "maxlogit": max_logit_score, "energy": energy_score}
