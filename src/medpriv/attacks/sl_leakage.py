"""Label leakage in U-shaped split learning (Li et al. 2022): the server never receives labels,
but it receives, for every training row, the gradient of the loss with respect to its own
output, sent back by the client's head. For a softmax head that gradient is Wᵀ(p − e_y): its
direction flips with the label and its norm is larger for the rarer class.

* norm attack — score = ‖g‖ (no label needed);
* cosine attack — score = cos(g, g_ref) with g_ref the gradient of one row the server knows to
  be positive (one known label suffices).

Each is reported as the AUC of its score against the true labels, over the gradient rows the
server received during (about) the last epoch of training. 0.5 is guessing; near 1 means the
labels leave the hospital despite the U shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medpriv.metrics import auroc


@dataclass(frozen=True)
class LabelLeakage:
    norm_auc: float
    cosine_auc: float
    n_gradients: int
    positive_rate: float
    gradient_noise: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": max(self.norm_auc, self.cosine_auc),
            "norm_auc": self.norm_auc,
            "cosine_auc": self.cosine_auc,
            "n_gradients": self.n_gradients,
            "positive_rate": self.positive_rate,
            "defense": {"gradient_noise": self.gradient_noise},
        }


def label_leakage(
    gradients: np.ndarray, labels: np.ndarray, *, gradient_noise: float = 0.0, seed: int = 0
) -> LabelLeakage | None:
    """The two attacks on the gradient rows a server received; None without both classes."""
    labels = np.asarray(labels).astype(int)
    if gradients.ndim != 2 or len(np.unique(labels)) < 2:
        return None
    norms = np.linalg.norm(gradients, axis=1)
    rng = np.random.default_rng(seed)
    reference = gradients[rng.choice(np.flatnonzero(labels == 1))]
    cosine = gradients @ reference / (norms * np.linalg.norm(reference) + 1e-12)
    # The norm rule: the rarer class has the larger gradients.
    minority_positive = labels.mean() <= 0.5
    norm_auc = auroc(labels, norms if minority_positive else -norms)
    return LabelLeakage(
        norm_auc=float(norm_auc),
        cosine_auc=float(auroc(labels, cosine)),
        n_gradients=len(labels),
        positive_rate=float(labels.mean()),
        gradient_noise=float(gradient_noise),
    )
