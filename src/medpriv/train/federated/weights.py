"""Model weights as plain float32 arrays: what travels between server and clients.

The order is `MLP.parameters()` order (W0, b0, W1, b1, ...). Nothing here pickles: arrays go over
the wire as dtype/shape-tagged buffers (Flower's ArrayRecord) or into npz/safetensors files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medpriv.errors import ProtocolError

Weights = list[np.ndarray]


def get_weights(network: nn.Module) -> Weights:
    """A copy of the network's parameters as float32 arrays."""
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in network.parameters()]


def set_weights(network: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load arrays into the network; a wrong count or shape is a ProtocolError."""
    params = list(network.parameters())
    problems = update_problems([p.detach().numpy() for p in params], weights)
    if problems:
        raise ProtocolError("; ".join(problems))
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))


def update_problems(reference: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> list[str]:
    """Why `weights` cannot stand in for `reference` (empty when it can): count, shapes, values."""
    if len(weights) != len(reference):
        return [f"expected {len(reference)} arrays, got {len(weights)}"]
    problems = []
    for i, (want, got) in enumerate(zip(reference, weights, strict=True)):
        got = np.asarray(got)
        if got.shape != want.shape:
            problems.append(f"array {i} has shape {got.shape}, expected {want.shape}")
        elif not np.issubdtype(got.dtype, np.floating):
            problems.append(f"array {i} has dtype {got.dtype}, expected floating point")
        elif not np.isfinite(got).all():
            problems.append(f"array {i} holds NaN or infinite values")
    return problems


def n_bytes(weights: Sequence[np.ndarray]) -> int:
    """Payload size of a weight list (what one transfer of it costs, before framing)."""
    return int(sum(np.asarray(w).nbytes for w in weights))


def weighted_mean(updates: Sequence[tuple[Weights, float]]) -> Weights:
    """Σ wᵢ·xᵢ / Σ wᵢ per array, accumulated in float64."""
    total = float(sum(weight for _, weight in updates))
    if not updates or total <= 0:
        raise ValueError("a weighted mean needs at least one update with positive weight")
    out = [np.zeros(w.shape, dtype=np.float64) for w in updates[0][0]]
    for arrays, weight in updates:
        for acc, a in zip(out, arrays, strict=True):
            acc += (weight / total) * np.asarray(a, dtype=np.float64)
    return [a.astype(np.float32) for a in out]
