"""Federated evaluation: each site scores the global model on its own held-out patients and
returns aggregates only — a histogram of the predicted log-odds by label at a fixed binning —
never a per-patient score or row. The coordinator adds the histograms up and reads utility from
the sum, for the whole federation and for each site.

AUROC from a histogram counts a positive–negative pair in different bins as ordered by its bins
(exactly as the scores order it) and a pair in the same bin as a tie (½). The exact AUROC of the
scores therefore lies within ± ½·Σ_b pos_b·neg_b / (P·N) of it: the binning error, computed
from the histogram itself and reported beside the AUROC. The bins are fixed in advance (never
fitted to anyone's scores): `BINS` equal-width bins of the log-odds on [−`SPAN`, `SPAN`], the
outermost ones open-ended; fine on the log-odds scale because a model's scores crowd into a
narrow range of probabilities (near the prevalence) where equal-width probability bins would
tie many pairs. Accuracy at probability ½ is exact (log-odds 0 is a bin edge). The scores are
the network's own (no calibration), the same on both engines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 1_000  # even, so that log-odds 0 (probability ½) is a bin edge
SPAN = 8.0  # log-odds beyond ±8 (probabilities beyond 0.9997 or below 0.0003) share the end bins


@dataclass(frozen=True)
class ScoreHistogram:
    """Counts of held-out patients per probability bin, for each label."""

    positives: np.ndarray  # (BINS,) int
    negatives: np.ndarray  # (BINS,) int

    def __post_init__(self) -> None:
        for counts in (self.positives, self.negatives):
            if counts.shape != (BINS,) or (counts < 0).any():
                raise ValueError(f"a score histogram holds {BINS} non-negative counts per label")

    @classmethod
    def of(cls, log_odds: np.ndarray, labels: np.ndarray) -> ScoreHistogram:
        """The histogram of one site's held-out scores (log-odds of the positive class)."""
        z = np.nan_to_num(np.asarray(log_odds, dtype=float), nan=0.0)
        bins = np.clip(np.floor((z + SPAN) / (2 * SPAN) * BINS), 0, BINS - 1).astype(int)
        y = np.asarray(labels).astype(bool)
        return cls(
            positives=np.bincount(bins[y], minlength=BINS).astype(np.int64),
            negatives=np.bincount(bins[~y], minlength=BINS).astype(np.int64),
        )

    @classmethod
    def total(cls, histograms: Iterable[ScoreHistogram]) -> ScoreHistogram:
        found = list(histograms)
        return cls(
            positives=sum((h.positives for h in found), np.zeros(BINS, np.int64)),
            negatives=sum((h.negatives for h in found), np.zeros(BINS, np.int64)),
        )

    def to_metrics(self) -> dict[str, list[int]]:
        """As a Flower MetricRecord holds it (two lists of BINS counts)."""
        return {"positives": self.positives.tolist(), "negatives": self.negatives.tolist()}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> ScoreHistogram:
        """From a site's reply; a malformed one raises ValueError with the reason."""
        try:
            positives = np.asarray(list(metrics["positives"]), dtype=np.int64)
            negatives = np.asarray(list(metrics["negatives"]), dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed score histogram: {exc}") from None
        return cls(positives=positives, negatives=negatives)

    def utility(self) -> dict[str, float | int | None]:
        """n, positives, AUROC (± its binning error) and accuracy at probability ½."""
        pos, neg = self.positives.astype(float), self.negatives.astype(float)
        n_pos, n_neg = float(pos.sum()), float(neg.sum())
        accuracy = (pos[BINS // 2 :].sum() + neg[: BINS // 2].sum()) / max(1.0, n_pos + n_neg)
        out: dict[str, float | int | None] = {
            "n": int(n_pos + n_neg),
            "positives": int(n_pos),
            "accuracy": float(accuracy),
            "auroc": None,
            "auroc_binning_error": None,
        }
        if n_pos and n_neg:
            below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
            ordered = float((pos * below).sum())
            ties = float((pos * neg).sum())
            out["auroc"] = (ordered + 0.5 * ties) / (n_pos * n_neg)
            out["auroc_binning_error"] = 0.5 * ties / (n_pos * n_neg)
        return out


def federated_utility(histograms: Mapping[str, ScoreHistogram]) -> dict[str, Any]:
    """The combined utility and each site's, from the sites' histograms."""
    return {
        "binning": f"{BINS} equal-width bins of the predicted log-odds on [-{SPAN:g}, {SPAN:g}]",
        "combined": ScoreHistogram.total(histograms.values()).utility(),
        "sites": {site: h.utility() for site, h in sorted(histograms.items())},
    }


MEMBERSHIP_THREAT_MODEL = (
    "each site attacks the global model with its own patients: its training patients (members) "
    "against its held-out ones (non-members), scored by the model's log-odds of each patient's "
    "true label (the loss-threshold attack); a site returns only histograms of those scores, "
    "the coordinator adds them up"
)
FPR_LEVELS = (0.01, 0.001)


def exposure(histogram: ScoreHistogram) -> dict[str, Any]:
    """Membership exposure from a histogram whose positives are members and negatives
    non-members (scored by the true label's log-odds): the attack's AUC (± its binning error)
    and its TPR at low FPR, read at bin edges (a threshold whose FPR is at most the level)."""
    members, others = histogram.positives.astype(float), histogram.negatives.astype(float)
    out: dict[str, Any] = {
        "members": int(members.sum()),
        "non_members": int(others.sum()),
        "auc": None,
        "auc_binning_error": None,
        "tpr_at_fpr": {},
    }
    if not members.sum() or not others.sum():
        return out
    ranked = histogram.utility()
    out["auc"], out["auc_binning_error"] = ranked["auroc"], ranked["auroc_binning_error"]
    # guessing "member" at or above bin edge b: cumulative counts from the top
    tpr = np.cumsum(members[::-1])[::-1] / members.sum()
    fpr = np.cumsum(others[::-1])[::-1] / others.sum()
    for level in FPR_LEVELS:
        allowed = fpr <= level
        out["tpr_at_fpr"][f"{level:g}"] = float(tpr[allowed].max()) if allowed.any() else 0.0
    return out


def federated_exposure(histograms: Mapping[str, ScoreHistogram]) -> dict[str, Any]:
    """The combined and per-site membership exposure, with the threat model."""
    return {
        "threat_model": MEMBERSHIP_THREAT_MODEL,
        "binning": f"{BINS} equal-width bins of the log-odds on [-{SPAN:g}, {SPAN:g}]",
        "combined": exposure(ScoreHistogram.total(histograms.values())),
        "sites": {site: exposure(h) for site, h in sorted(histograms.items())},
    }
