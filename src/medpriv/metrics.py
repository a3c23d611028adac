"""Utility metrics: AUROC with bootstrap CI, AUPRC, accuracy, F1, Brier, confusion, curves."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by ranks (ties averaged); NaN when a class is absent."""
    return float(_auroc_rows(np.asarray(score, float)[None, :], np.asarray(y)[None, :])[0])


def _auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of a (B, n) score matrix against matching labels."""
    ranks = rankdata(scores, axis=1)
    pos = labels == 1
    n_pos = pos.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_auroc_ci(
    y: np.ndarray,
    score: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 200,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUROC (resampling records)."""
    if n_boot <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    y, score = np.asarray(y), np.asarray(score, float)
    values = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_boot - start), len(y)))
        values.append(_auroc_rows(score[idx], y[idx]))
    aucs = np.concatenate(values)
    aucs = aucs[np.isfinite(aucs)]
    alpha = (1 - level) / 2
    return float(np.quantile(aucs, alpha)), float(np.quantile(aucs, 1 - alpha))


def confusion(y: np.ndarray, prob: np.ndarray, threshold: float) -> list[list[int]]:
    """[[tn, fp], [fn, tp]] at `threshold` (predict positive when prob >= threshold)."""
    pred = prob >= threshold
    y = np.asarray(y) == 1
    return [
        [int((~y & ~pred).sum()), int((~y & pred).sum())],
        [int((y & ~pred).sum()), int((y & pred).sum())],
    ]


def choose_threshold(y_val: np.ndarray, prob_val: np.ndarray) -> float:
    """The validation threshold that maximizes balanced accuracy (Youden's J)."""
    fpr, tpr, thresholds = roc_curve(y_val, prob_val)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def _threshold_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict:
    (tn, fp), (fn, tp) = confusion(y, prob, threshold)
    tpr = tp / (tp + fn) if tp + fn else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "accuracy": (tp + tn) / len(y),
        "balanced_accuracy": (tpr + tnr) / 2,
        "f1": f1,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def utility_metrics(
    y: np.ndarray,
    prob: np.ndarray,
    *,
    val_threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The `utility` block of results.json, at threshold 0.5 and at the validation threshold."""
    y, prob = np.asarray(y), np.asarray(prob, float)
    at_half = _threshold_metrics(y, prob, 0.5)
    out = {
        "auroc": auroc(y, prob),
        "auroc_ci95": [round(v, 6) for v in bootstrap_auroc_ci(y, prob, n_boot=n_boot, seed=seed)],
        "auprc": float(average_precision_score(y, prob)),
        **{k: at_half[k] for k in ("accuracy", "balanced_accuracy", "f1")},
        "brier": float(np.mean((prob - y) ** 2)),
        "confusion_matrix": at_half["confusion_matrix"],
        "threshold": 0.5,
        "n_test": len(y),
        "positive_rate": float(y.mean()),
    }
    if val_threshold is not None:
        at_val = _threshold_metrics(y, prob, val_threshold)
        out.update(
            {
                "val_threshold": val_threshold,
                "accuracy_at_val_threshold": at_val["accuracy"],
                "balanced_accuracy_at_val_threshold": at_val["balanced_accuracy"],
                "f1_at_val_threshold": at_val["f1"],
                "confusion_matrix_at_val_threshold": at_val["confusion_matrix"],
            }
        )
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


MIN_BIN = 20  # fewest test records in a calibration bin


def calibration_bins(y: np.ndarray, prob: np.ndarray, *, n_bins: int = 10) -> dict:
    """Reliability curve over equal-count bins of the predicted probability: mean predicted
    and observed positive rate per bin, with its size. Aggregates only: with fewer than
    `MIN_BIN` records per bin, fewer bins are used."""
    y, prob = np.asarray(y, float), np.asarray(prob, float)
    n_bins = max(1, min(n_bins, len(y) // MIN_BIN))
    order = np.argsort(prob, kind="stable")
    groups = [g for g in np.array_split(order, n_bins) if len(g)]
    return {
        "predicted": [round(float(prob[g].mean()), 5) for g in groups],
        "observed": [round(float(y[g].mean()), 5) for g in groups],
        "count": [len(g) for g in groups],
    }


def curves(y: np.ndarray, prob: np.ndarray, *, max_points: int = 200) -> dict:
    """ROC and precision-recall curves, thinned to at most `max_points` points each, and the
    calibration (reliability) curve."""
    fpr, tpr, _ = roc_curve(y, prob)
    precision, recall, _ = precision_recall_curve(y, prob)

    def thin(*arrays: np.ndarray) -> list[list[float]]:
        keep = np.unique(
            np.linspace(0, len(arrays[0]) - 1, min(max_points, len(arrays[0]))).astype(int)
        )
        return [np.round(a[keep], 5).tolist() for a in arrays]

    fpr_t, tpr_t = thin(fpr, tpr)
    recall_t, precision_t = thin(recall[::-1], precision[::-1])
    return {
        "roc": {"fpr": fpr_t, "tpr": tpr_t},
        "pr": {"recall": recall_t, "precision": precision_t},
        "calibration": calibration_bins(y, prob),
    }
