"""DP-SGD on the client's part of a split network (the hospital's layers: the bottom and, in
U-shaped learning, the head).

Each sample's gradient over the client's parameters is clipped to C (jointly over bottom and
head), the clipped sum gets Gaussian noise N(0, σ²C²) and is divided by the expected batch size,
as in `medpriv.privacy.step` (whose noise source draws it); batches are Poisson samples. The
per-sample gradient at the cut comes from the server (its rows are the per-sample gradients of
the mean loss, times B).

What this protects: nothing that an ε could state. The server's layers train without DP on the
raw activations (and, vanilla, the labels), so removing one patient changes every other record's
gradient at the cut, and the clipping norm no longer bounds one patient's influence. The trainer
reports this clipping-and-noise as a defense, with no ε.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medpriv.privacy.clipping import PerSample, clip_factors, per_sample_pass
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.step import Step, add_noise_
from medpriv.train.split.client import SplitNetwork


def _cross_entropy_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample d(cross-entropy)/d(logits) = softmax − one-hot."""
    g = torch.softmax(logits, dim=1)
    return g - nn.functional.one_hot(y, g.shape[1]).to(g.dtype)


def make_private_split_step(
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    noise: NoiseSource,
) -> Step:
    """A loop `Step` for a `SplitNetwork`: per-sample clipped, noised client update."""
    if not (math.isfinite(expected_batch_size) and expected_batch_size > 0):
        raise ValueError(f"expected_batch_size must be > 0 and finite, got {expected_batch_size}")

    def step(
        network: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        assert isinstance(network, SplitNetwork)
        optimizer.zero_grad(set_to_none=True)
        params = list(network.local_parameters())
        sums = [torch.zeros_like(p) for p in params]
        logits = torch.zeros((0, 2))
        if len(x):
            passes, logits = _passes(network, x, y)
            norms = torch.linalg.vector_norm(torch.stack([p.norms() for p in passes]), dim=0)
            factors = clip_factors(norms, max_grad_norm)
            targets = iter(sums)
            for part in passes:
                part.accumulate(factors, [next(targets) for _ in part.params])
        add_noise_(
            sums, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, noise=noise
        )
        for p, total in zip(params, sums, strict=True):
            p.grad = total / expected_batch_size
        optimizer.step()
        return logits

    return step


def _passes(
    network: SplitNetwork, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[PerSample], torch.Tensor]:
    """The client's per-sample passes (bottom, then head) and the batch logits; the server is
    called inside, exactly as in the non-private step."""
    batch = len(x)
    found: dict[str, object] = {}

    sent = network.with_activation_noise

    if not network.ushaped:

        def top(h: torch.Tensor) -> torch.Tensor:
            grad_h, logits = network.remote.train(sent(h).numpy(), y.numpy())
            found["logits"] = torch.from_numpy(logits)
            return torch.from_numpy(grad_h) * batch

        return [per_sample_pass(network.bottom, x, top)], found["logits"]  # type: ignore[return-value]

    head = nn.Sequential(network.head)

    def top_ushaped(h: torch.Tensor) -> torch.Tensor:
        z = torch.from_numpy(network.remote.forward(sent(h).numpy()))
        head_pass = per_sample_pass(head, z, lambda out: _cross_entropy_grad(out, y))
        grad_z = head_pass.grads[0] @ network.head.weight.detach() / batch  # mean-loss rows
        grad_z = network.with_gradient_noise(grad_z)
        network.observe(grad_z.numpy(), y.numpy())
        found["head"] = head_pass
        return torch.from_numpy(network.remote.backward(grad_z.numpy())) * batch

    bottom = per_sample_pass(network.bottom, x, top_ushaped)
    head_pass = found["head"]
    assert isinstance(head_pass, PerSample)
    return [bottom, head_pass], head_pass.output
