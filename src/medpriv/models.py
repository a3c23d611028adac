"""The MLP family (no BatchNorm, so per-sample gradients and DP-SGD stay valid)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """in -> hidden... -> 2 logits, ReLU activations, optional dropout."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 64),
        *,
        dropout: float = 0.0,
        n_classes: int = 2,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_classes))
        super().__init__(*layers)
        self.in_features = in_features
        self.hidden = tuple(hidden)

    @torch.no_grad()
    def start_at_prior(self, positive_rate: float) -> None:
        """Set the output bias so that the initial margin is about logit(positive_rate)."""
        rate = min(max(positive_rate, 1e-3), 1 - 1e-3)
        log_odds = math.log(rate / (1 - rate))
        output = self[-1]
        output.bias.copy_(torch.tensor([-log_odds / 2, log_odds / 2], dtype=output.bias.dtype))


@torch.no_grad()
def positive_margin(network: nn.Module, x: torch.Tensor, *, batch_size: int = 8192) -> torch.Tensor:
    """logit(P(y=1)) = z1 - z0 for each row, computed in eval mode without gradients."""
    was_training = network.training
    network.eval()
    try:
        out = [network(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        network.train(was_training)
    logits = torch.cat(out) if out else torch.zeros((0, 2))
    return logits[:, 1] - logits[:, 0]
