"""Platt scaling: an affine map of a model's margin, fitted on the validation patients.

DP-SGD's clipping and noise leave a model that ranks well but whose scale and offset are off, so
its probabilities (and accuracy at 0.5) suffer. Two numbers fitted on validation records restore
them; this is post-processing of the trained model, so the training records' ε is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class Platt:
    """margin ↦ scale · margin + shift."""

    scale: float = 1.0
    shift: float = 0.0

    def apply(self, margin: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(margin, dtype=np.float64) + self.shift

    def to_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "shift": self.shift}

    @classmethod
    def fit(cls, margin: np.ndarray, labels: np.ndarray, *, iterations: int = 100) -> Platt:
        """Maximum likelihood with Platt's smoothed targets (Newton's method, backtracking).

        Smoothed targets, (n₊+1)/(n₊+2) and 1/(n₋+2), keep the fit finite when the validation
        margins separate the classes. With a single class there is nothing to fit: identity.
        """
        m = np.asarray(margin, dtype=np.float64).ravel()
        y = np.asarray(labels).ravel().astype(bool)
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0 or not np.all(np.isfinite(m)):
            return cls()
        target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        center, spread = float(m.mean()), float(m.std()) or 1.0
        design = np.column_stack([(m - center) / spread, np.ones_like(m)])  # well conditioned
        params = np.array([0.0, float(np.log(target.mean() / (1 - target.mean())))])
        loss = _log_loss(design @ params, target)
        for _ in range(iterations):
            p = expit(design @ params)
            gradient = design.T @ (p - target)
            hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
            update = np.linalg.solve(hessian, gradient)
            step = 1.0
            while step > 1e-6:  # a full Newton step can overshoot
                candidate = params - step * update
                candidate_loss = _log_loss(design @ candidate, target)
                if candidate_loss <= loss:
                    break
                step /= 2
            else:
                break
            params, improvement, loss = candidate, loss - candidate_loss, candidate_loss
            if improvement < 1e-12 * len(m):
                break
        scale = params[0] / spread
        return cls(scale=float(scale), shift=float(params[1] - scale * center))


def _log_loss(z: np.ndarray, target: np.ndarray) -> float:
    """Summed cross-entropy of soft targets against sigmoid(z), computed stably."""
    return float(np.sum(np.logaddexp(0.0, z) - target * z))


@dataclass
class CalibratedScorer:
    """A scorer whose margins go through a fitted Platt map."""

    scorer: object
    platt: Platt

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.platt.apply(self.scorer.margin(x))  # type: ignore[attr-defined]


def maybe_calibrate(
    scorer: object, x_val: np.ndarray, y_val: np.ndarray, *, calibrate: bool
) -> tuple[object, dict[str, float] | None]:
    """(scorer, fitted map or None): Platt-calibrated on the validation rows when asked."""
    if not calibrate:
        return scorer, None
    platt = Platt.fit(scorer.margin(x_val), y_val)  # type: ignore[attr-defined]
    return CalibratedScorer(scorer, platt), platt.to_dict()
