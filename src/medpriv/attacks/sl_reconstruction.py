"""Input reconstruction from split learning's smashed activations (model inversion by a learned
inverse network, He et al. 2019; the attack NoPeek defends against).

The server holds every training record's cut-layer activations (as sent, noise defense
included). It also holds auxiliary patients from the same distribution — the test split's
patients, disjoint from the training patients — and query access to the client's layers, so
it can pair their inputs with activations and train an inverse network (activations → design
matrix, an MLP fitted by mean squared error). It then decodes every training record's
activations and is scored row by row, per feature: categorical exact match, continuous within
±0.319 standard deviations (TabLeak's tolerance), against the distribution baseline that guesses
the most likely record for everyone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.attacks.inversion import (
    TOLERANCE,
    FeatureLayout,
    FeaturePrior,
    reconstruction_accuracy,
)
from medpriv.data.splits import Splits
from medpriv.train.base import TrainedModel

EPOCHS = 60
BATCH = 128
AUXILIARY_PART = "test"  # the server's auxiliary patients: same distribution, never trained on


def _activations(
    layers: nn.Module, x: np.ndarray, noise: float, generator: torch.Generator
) -> torch.Tensor:
    with torch.no_grad():
        h = layers(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if noise > 0:
            h = h + noise * torch.randn(h.shape, generator=generator)
    return h


def train_inverse(h: torch.Tensor, x: np.ndarray, *, seed: int, epochs: int = EPOCHS) -> nn.Module:
    """An MLP from activations to the design matrix, fitted by mean squared error (Adam)."""
    torch.manual_seed(seed)
    target = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    inverse = nn.Sequential(
        nn.Linear(h.shape[1], 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, target.shape[1]),
    )
    optimizer = torch.optim.Adam(inverse.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(h)).split(BATCH):
            optimizer.zero_grad(set_to_none=True)
            F.mse_loss(inverse(h[idx]), target[idx]).backward()
            optimizer.step()
    return inverse.eval()


def sl_reconstruction(
    model: TrainedModel, splits: Splits, *, seed: int = 0
) -> dict[str, Any] | None:
    """The attack's results.json block (auxiliary data: the test split's patients, never trained
    on); None for models that are not split."""
    layers = model.artifacts.get("sl_client_layers")
    if layers is None:
        return None
    if AUXILIARY_PART not in splits.parts:
        raise ValueError(f"sl_reconstruction needs a {AUXILIARY_PART!r} split as auxiliary data")
    pre = model.preprocessor
    layout = FeatureLayout.from_preprocessor(pre)
    noise = float(model.params.get("activation_noise", 0.0))
    generator = torch.Generator().manual_seed(seed)
    x_aux = pre.transform(splits.parts[AUXILIARY_PART].features)
    x_members = pre.transform(splits.train.features)
    inverse = train_inverse(_activations(layers, x_aux, noise, generator), x_aux, seed=seed)
    with torch.no_grad():
        x_hat = inverse(_activations(layers, x_members, noise, generator)).numpy()
    x_hat = layout.project(x_hat)
    score = reconstruction_accuracy(x_members, x_hat, layout, aligned=True)
    prior = FeaturePrior.from_data(x_aux)
    baseline = reconstruction_accuracy(
        x_members, prior.guess(layout, len(x_members)), layout, aligned=True
    )
    k = layout.n_continuous
    error = np.abs(x_hat[:, list(layout.continuous)] - x_members[:, list(layout.continuous)])
    return {
        "accuracy": score.accuracy,
        "baseline_accuracy": baseline.accuracy,
        "advantage": score.accuracy - baseline.accuracy,
        "continuous_accuracy": score.continuous,
        "categorical_accuracy": score.categorical,
        "baseline_continuous_accuracy": baseline.continuous,
        "baseline_categorical_accuracy": baseline.categorical,
        "continuous_mean_abs_error_sd": float(error.mean()) if k else None,
        "per_feature_accuracy": score.per_feature,
        "baseline_per_feature_accuracy": baseline.per_feature,
        "tolerance_sd": TOLERANCE,
        "n_auxiliary": len(x_aux),
        "n_reconstructed": len(x_members),
        "defenses": {
            "activation_noise": noise,
            "nopeek": float(model.params.get("nopeek", 0.0)),
        },
    }
