"""K L2-regularized logistic regressions at once — the `logreg` reference models of LiRA/RMIA as
one stacked problem instead of K one-by-one scikit-learn fits.

Each model k minimizes scikit-learn's objective on its own rows (`mask[k]`):
    C · Σ_i mask[k, i] · logloss(y_i, x_i·w_k + b_k) + ½‖w_k‖²   (the intercept b_k unpenalized)
by Newton's method with backtracking, all models in step. The objective is strictly convex, so
the optimum is the one `LogisticRegression(C=C, solver="lbfgs")` converges to; the stopping rule
(the largest gradient entry below `tol`) is tighter than scikit-learn's default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAX_NEWTON_STEPS = 100
MAX_HALVINGS = 30


@dataclass(frozen=True)
class StackedLogistic:
    """K fitted models: weights (K, d) and intercepts (K,)."""

    weights: np.ndarray
    intercepts: np.ndarray
    newton_steps: int

    def margins(self, x: np.ndarray) -> np.ndarray:
        """(K, n) log-odds of each model on the rows of `x`."""
        return (np.asarray(x, np.float64) @ self.weights.T + self.intercepts).T


def _objective(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, c: float):
    """(K,) objective values; z (K, n) margins, w (K, d+1) with the intercept last."""
    losses = F.binary_cross_entropy_with_logits(z, y.expand_as(z), reduction="none")
    return c * (mask * losses).sum(dim=1) + 0.5 * (w[:, :-1] ** 2).sum(dim=1)


def fit_stacked_logistic(
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    *,
    c: float,
    tol: float = 1e-8,
) -> StackedLogistic:
    """Fit one model per row of `mask` (K, n) on the rows of `x` (n, d) it selects."""
    design = torch.from_numpy(np.c_[np.asarray(x, np.float64), np.ones(len(x))])
    labels = torch.from_numpy(np.asarray(y, np.float64))
    rows = torch.from_numpy(np.asarray(mask, np.float64))
    single = design.to(torch.float32)
    k, d = rows.shape[0], design.shape[1]
    penalty = torch.ones(d, dtype=torch.float64)
    penalty[-1] = 0.0  # the intercept is not penalized
    w = torch.zeros(k, d, dtype=torch.float64)
    z = w @ design.T
    value = _objective(z, labels, rows, w, c)
    steps = 0
    for steps in range(1, MAX_NEWTON_STEPS + 1):
        p = torch.sigmoid(z)
        gradient = c * ((rows * (p - labels)) @ design) + w * penalty
        if float(gradient.abs().max()) < tol * max(1.0, c):
            steps -= 1
            break
        curvature = (c * rows * p * (1 - p)).to(torch.float32)  # (K, n)
        hessians = torch.empty(k, d, d, dtype=torch.float64)
        for model in range(k):  # one (d, d) Hessian at a time: memory n·d, not K·n·d
            # in float32 (twice as fast); the gradient and the objective stay in float64, so
            # the line search and the stopping rule are exact
            hessians[model] = ((single.T * curvature[model]) @ single).to(torch.float64)
        hessians += torch.diag(penalty + 1e-10)
        direction = torch.linalg.solve(hessians, gradient.unsqueeze(-1)).squeeze(-1)
        step = torch.ones(k, 1, dtype=torch.float64)
        for _ in range(MAX_HALVINGS):
            trial = w - step * direction
            trial_z = trial @ design.T
            trial_value = _objective(trial_z, labels, rows, trial, c)
            worse = trial_value > value + 1e-12 * value.abs().clamp(min=1.0)
            if not bool(worse.any()):
                break
            step[worse] *= 0.5
        w, z, value = trial, trial_z, trial_value
    return StackedLogistic(
        weights=w[:, :-1].numpy().copy(), intercepts=w[:, -1].numpy().copy(), newton_steps=steps
    )
