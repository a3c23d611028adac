"""What every attack takes and returns: `AttackInput` (data only), `RocCurve`, `AttackResult`.

Scores are oriented so that higher means "more likely a member" (or "more likely the positive
attribute value"); ground truth is by privacy unit: a unit is a member when the target model was
trained on its record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

# The low false-positive rates at which TPR is reported (Carlini et al. 2022).
LOW_FPRS = (0.001, 0.01)


@dataclass(frozen=True)
class AttackInput:
    """Data only: per-record attack signal and ground truth, no model.

    `member` is 1 for records the target was trained on; `labels` are the task labels;
    `unit_ids` name the privacy unit of each record.
    """

    scores: np.ndarray
    member: np.ndarray
    labels: np.ndarray | None = None
    unit_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        scores, member = np.asarray(self.scores, float), np.asarray(self.member).astype(int)
        if scores.shape != member.shape or scores.ndim != 1:
            raise ValueError("scores and member must be 1-D arrays of the same length")
        if not np.all(np.isfinite(scores)):
            raise ValueError("attack scores must be finite")
        if set(np.unique(member)) != {0, 1}:
            raise ValueError("an attack needs both members and non-members")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "member", member)


@dataclass(frozen=True)
class RocCurve:
    """ROC arrays (for log-log plots) with the summary numbers read from them."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    @classmethod
    def from_scores(cls, member: np.ndarray, scores: np.ndarray) -> RocCurve:
        fpr, tpr, thresholds = roc_curve(member, scores)
        return cls(fpr=fpr, tpr=tpr, thresholds=thresholds)

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.tpr, self.fpr))

    def tpr_at(self, fpr: float) -> float:
        """The best TPR with FPR at most `fpr` (0 when no threshold is that strict)."""
        allowed = self.fpr <= fpr
        return float(self.tpr[allowed].max()) if allowed.any() else 0.0

    @property
    def advantage(self) -> float:
        """max over thresholds of TPR − FPR (membership advantage, Yeom et al. 2018)."""
        return float(np.max(self.tpr - self.fpr))

    def thinned(self, points: int = 400) -> dict[str, list[float]]:
        """At most `points` ROC points, log-spaced in FPR, for results.json and plots."""
        if len(self.fpr) <= points:
            index = np.arange(len(self.fpr))
        else:
            grid = np.unique(np.concatenate([[0.0], np.geomspace(1e-5, 1.0, points - 1)]))
            index = np.unique(np.searchsorted(self.fpr, grid, side="right") - 1)
            index = np.unique(np.concatenate([index, [len(self.fpr) - 1]]))
        return {
            "fpr": [float(v) for v in self.fpr[index]],
            "tpr": [float(v) for v in self.tpr[index]],
        }


@dataclass(frozen=True)
class AttackResult:
    """An attack's outcome: ROC, AUC, TPR at low FPR, advantage, per-record scores."""

    attack: str
    roc: RocCurve
    scores: np.ndarray
    member: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_input(cls, attack: str, data: AttackInput, **extra: Any) -> AttackResult:
        return cls(
            attack=attack,
            roc=RocCurve.from_scores(data.member, data.scores),
            scores=data.scores,
            member=data.member,
            extra=extra,
        )

    @property
    def auc(self) -> float:
        return self.roc.auc

    @property
    def advantage(self) -> float:
        return self.roc.advantage

    def tpr_at_fpr(self) -> dict[str, float]:
        return {f"{fpr:g}": self.roc.tpr_at(fpr) for fpr in LOW_FPRS}

    def to_dict(self) -> dict[str, Any]:
        """The results.json block (per-record scores stay out of it)."""
        return {
            "auc": self.auc,
            "tpr_at_fpr": self.tpr_at_fpr(),
            "advantage": self.advantage,
            "n_members": int(self.member.sum()),
            "n_nonmembers": int((1 - self.member).sum()),
            **self.extra,
            "roc": self.roc.thinned(),
        }
