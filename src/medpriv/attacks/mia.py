"""Membership-inference statistics: loss threshold, LiRA (online/offline, fixed variance), RMIA.

All functions take arrays only (target and shadow outputs on the attacked records) and return
per-record scores, higher meaning "more likely a member". Which records are members, and which
shadow saw which record, is the caller's business (`medpriv.attacks.membership`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

# Below this many IN (or OUT) shadows for a record, its own variance is not estimated.
MIN_SHADOWS_FOR_VARIANCE = 8


def logit_confidence(margin: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA statistic log(p_y / (1 − p_y)) of the true label: for two classes, the signed margin."""
    margin = np.asarray(margin, dtype=np.float64)
    return np.where(np.asarray(labels) == 1, margin, -margin)


def true_label_probability(margin: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """P(true label) from margins (any leading shape), computed stably."""
    return np.exp(-np.logaddexp(0.0, -logit_confidence(margin, labels)))


def loss_scores(margin: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Yeom et al. (2018): minus the cross-entropy of the true label (low loss = member)."""
    return -np.logaddexp(0.0, -logit_confidence(margin, labels))


def lira_scores(
    target: np.ndarray,
    shadow: np.ndarray,
    in_mask: np.ndarray,
    *,
    online: bool = True,
    fixed_variance: bool = True,
) -> np.ndarray:
    """LiRA (Carlini et al. 2022) on logit-scaled confidences.

    `target` (n,) is the target model's statistic per record; `shadow` (K, n) the shadows'; and
    `in_mask` (K, n) says which shadow trained on which record. Online: the log-likelihood ratio
    of the target's statistic under Gaussians fitted to the IN and OUT shadows; offline: how far
    above the OUT Gaussian it lies (one-sided). Fixed variance uses one pooled standard deviation
    per side, as the paper recommends with few shadows; records with fewer than
    MIN_SHADOWS_FOR_VARIANCE shadows on a side always use the pooled one.
    """
    target = np.asarray(target, dtype=np.float64)
    shadow = np.asarray(shadow, dtype=np.float64)
    in_mask = np.asarray(in_mask, dtype=bool)
    if shadow.shape != in_mask.shape or shadow.shape[1:] != target.shape:
        raise ValueError("shadow and in_mask must be (K, n) with n = len(target)")
    mu_out, sd_out = _gaussian(shadow, ~in_mask, fixed_variance)
    if not online:
        return norm.logcdf(target, loc=mu_out, scale=sd_out)
    mu_in, sd_in = _gaussian(shadow, in_mask, fixed_variance)
    return norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)


def _gaussian(values: np.ndarray, mask: np.ndarray, fixed_variance: bool) -> tuple[np.ndarray, ...]:
    """Per-record mean and standard deviation of the masked shadow values."""
    counts = mask.sum(axis=0)
    if np.any(counts == 0):
        raise ValueError("every record needs at least one shadow on each side (IN and OUT)")
    mean = np.where(mask, values, 0.0).sum(axis=0) / counts
    deviation = np.where(mask, values - mean, 0.0)
    pooled = float(np.sqrt((deviation**2).sum() / max(counts.sum() - counts.size, 1)))
    pooled = max(pooled, 1e-6)
    if fixed_variance:
        return mean, np.full_like(mean, pooled)
    own = np.sqrt((deviation**2).sum(axis=0) / np.maximum(counts - 1, 1))
    sd = np.where(counts >= MIN_SHADOWS_FOR_VARIANCE, np.maximum(own, 1e-6), pooled)
    return mean, sd


def rmia_scores(
    target_prob: np.ndarray,
    reference_prob: np.ndarray,
    population_target_prob: np.ndarray,
    population_reference_prob: np.ndarray,
    *,
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA (Zarifzadeh et al. 2024): the fraction of population records z that x dominates.

    Pr(x) is the mean over reference models of P(true label of x); the likelihood ratio of x
    against z is (P_θ(x)/Pr(x)) / (P_θ(z)/Pr(z)), and the score is the share of z for which it is
    at least `gamma`. Reference models here are all shadows (online RMIA: each record is IN for
    about half of them). Probabilities: target (n,), reference (K, n), population target (m,),
    population reference (K, m).
    """
    ratio_x = np.asarray(target_prob) / np.maximum(np.mean(reference_prob, axis=0), 1e-30)
    ratio_z = np.asarray(population_target_prob) / np.maximum(
        np.mean(population_reference_prob, axis=0), 1e-30
    )
    threshold = np.sort(ratio_z * gamma)
    return np.searchsorted(threshold, ratio_x, side="right") / len(threshold)
