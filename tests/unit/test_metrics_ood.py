"""OOD metrics against hand-computed values, scikit-learn and the reference FPR95 algorithm."""
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dali_pixmix.metrics import ood

pytestmark = pytest.mark.unit


def reference_fpr_at_recall(y_true, y_score, recall_level=0.95):
    """Transcription of outlier-exposure's fpr_and_fdr_at_recall (anomalies = 1)."""
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    distinct = np.where(np.diff(y_score))[0]
    idx = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    sl = slice(last, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / np.sum(np.logical_not(y_true))


def step_average_precision(y_true, y_score):
    """AP = sum over distinct thresholds of (recall gain) x precision, by direct counting."""
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(y_score)[::-1]:
        flagged = y_score >= t
        tp = np.sum(flagged & (y_true == 1))
        recall, precision = tp / np.sum(y_true == 1), tp / np.sum(flagged)
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_perfect_separation():
    m = ood.ood_metrics([0.1, 0.2, 0.3], [0.8, 0.9])
    assert m == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}


def test_hand_computed_toy():
    # in: 1,3 ; out: 2,4. Pairs (out > in): (2>1),(4>1),(4>3) = 3 of 4 -> AUROC .75
    # ranking 4(+),3(-),2(+),1(-): AP = (1/1 + 2/3) / 2
    m = ood.ood_metrics([1.0, 3.0], [2.0, 4.0])
    assert m["auroc"] == pytest.approx(0.75)
    assert m["aupr"] == pytest.approx((1 + 2 / 3) / 2)
    # recall 1.0 (threshold 2) is the closest to .95 among {.5, .5, 1, 1}: 1 of 2 in-dist flagged
    assert m["fpr95"] == pytest.approx(0.5)


def test_direction_reversed_scores_flip_auroc():
    rng = np.random.default_rng(0)
    ins, outs = rng.normal(0, 1, 200), rng.normal(1, 1, 100)
    a = ood.ood_metrics(ins, outs)["auroc"]
    b = ood.ood_metrics(-ins, -outs)["auroc"]
    assert a > 0.7 and a + b == pytest.approx(1.0)


def test_matches_sklearn_and_reference_fpr_on_random_scores_with_ties():
    rng = np.random.default_rng(1)
    ins = np.round(rng.normal(0, 1, 500), 1)
    outs = np.round(rng.normal(1.2, 1, 137), 1)
    m = ood.ood_metrics(ins, outs)
    y = np.r_[np.zeros(500), np.ones(137)]
    s = np.r_[ins, outs]
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["aupr"] == pytest.approx(step_average_precision(y, s))
    assert m["fpr95"] == pytest.approx(reference_fpr_at_recall(y, s))


def test_scores_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float32)
    np.testing.assert_allclose(ood.msp_score(logits), [-0.5, -np.exp(2) / (np.exp(2) + 1)])
    np.testing.assert_allclose(ood.max_logit_score(logits.numpy()), [0.0, -2.0])
    np.testing.assert_allclose(ood.energy_score(logits), [-np.log(2), -np.log(np.exp(2) + 1)],
                               rtol=1e-6)
    assert set(ood.SCORES) == {"msp", "maxlogit", "energy"}


def test_bad_scores_are_clear_errors():
    with pytest.raises(ValueError, match="out_scores is empty"):
        ood.ood_metrics([0.1], [])
    with pytest.raises(ValueError, match="NaN"):
        ood.ood_metrics([0.1, np.nan], [0.2])


def test_runner_scores_match_the_score_functions():
    from dali_pixmix.evaluation.runner import batch_predictions
    logits = torch.randn(7, 4, generator=torch.Generator().manual_seed(0)) * 3
    preds = batch_predictions(logits, torch.arange(7) % 4)
    np.testing.assert_allclose(preds.msp, ood.msp_score(logits), rtol=1e-5)
    np.testing.assert_allclose(preds.maxlogit, ood.max_logit_score(logits), rtol=1e-5)
    np.testing.assert_allclose(preds.energy, ood.energy_score(logits), rtol=1e-5)
    np.testing.assert_allclose(preds.confidence, -ood.msp_score(logits), rtol=1e-5)
    np.testing.assert_array_equal(preds.top5[:, :4], torch.argsort(logits, 1, descending=True))
    assert np.all(preds.top5[:, 4] == -1)  # only 4 classes


def test_fpr95_takes_the_lowest_threshold_of_a_recall_plateau_and_rows_say_so():
    """Hand-computed: 20 anomalies, 10 in-distribution images. Descending scores: 18 anomalies,
    1 in-dist, the 19th anomaly (recall 19/20 = 0.95 reached with 1 false positive), 3 in-dist
    (recall stays 0.95: a plateau, 4 false positives at its lowest threshold), the 20th
    anomaly, 6 in-dist. The outlier-exposure convention takes the plateau's lowest threshold:
    FPR 4/10; "the first threshold reaching 95% recall" would give 1/10."""
    from dali_pixmix.evaluation.runner import Predictions
    from dali_pixmix.evaluation.tasks import ood_rows

    outs = np.r_[np.arange(100.0, 82.0, -1), 82.0, 78.0]  # 18 + the 19th + the 20th
    ins = np.r_[82.5, 81.0, 80.0, 79.0, np.arange(10.0, 4.0, -1)]
    assert ood.ood_metrics(ins, outs)["fpr95"] == pytest.approx(0.4)

    def predictions(scores):
        scores = np.asarray(scores, dtype=np.float32)
        n = len(scores)
        return Predictions(labels=np.zeros(n, np.int64), top5=np.zeros((n, 5), np.int32),
                           confidence=-scores, msp=scores, maxlogit=scores, energy=scores,
                           nll=np.zeros(n, np.float32))

    rows = ood_rows(predictions(ins), predictions(outs), "plateau")
    fpr95 = [r for r in rows if r.metric == "fpr95" and r.variant == "msp"]
    assert fpr95[0].value == pytest.approx(40.0)
    assert all(r.protocol.endswith(";fpr95@recall-closest-to-0.95,"
                                   "lowest-threshold-among-equal-recall") for r in rows)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    assert "LOWEST of them" in docs and "fpr_and_fdr_at_recall" in docs
