"""THE DP-SGD step: clip each sample's gradient, sum, add Gaussian noise σ·C, divide by the
expected batch size (Abadi et al. 2016; Opacus 1.6's `DPOptimizer` with `loss_reduction="mean"`).

Two engines compute the same update: `fast` (closed-form per-layer per-sample norms,
`medpriv.privacy.clipping`) and `opacus` (GradSampleModule + DPOptimizer, the reference and the
fallback for networks the fast path does not cover). Every draw comes from a `NoiseSource`
(`medpriv.privacy.randomness`); nothing here touches torch's global RNG. This module and
`randomness` are the only places in medpriv that draw privacy noise.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from medpriv.privacy.clipping import (
    _accumulate,
    _check_batch,
    _check_clip,
    _clip_factors,
    _norms,
    _passes,
    _Plan,
    _plan,
    clipped_grad_sum,
    supports,
)
from medpriv.privacy.randomness import NoiseSource

if TYPE_CHECKING:
    from medpriv.privacy.audit.canaries import DiracCanaries

# One optimizer step on one batch; returns the batch logits (detached).
Step = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], torch.Tensor]
ENGINES = ("fast", "opacus")


def _check_noise(noise_multiplier: float, expected_batch_size: float | None = None) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be >= 0 and finite, got {noise_multiplier}")
    if expected_batch_size is not None and not (
        math.isfinite(expected_batch_size) and expected_batch_size > 0
    ):
        raise ValueError(f"expected_batch_size must be > 0 and finite, got {expected_batch_size}")


def add_noise_(
    sums: Sequence[torch.Tensor],
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    noise: NoiseSource,
) -> None:
    """Add N(0, (σ·C)²) to every coordinate of the clipped sums, in place."""
    _check_noise(noise_multiplier)
    _check_clip(max_grad_norm)
    std = noise_multiplier * max_grad_norm
    for total in sums:
        total.add_(noise.gaussian(total.shape, std, like=total))


def noisy_clipped_sum(
    network: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    noise: NoiseSource,
    canaries: DiracCanaries | None = None,
) -> list[torch.Tensor]:
    """Σ clip(per-sample gradient, C) + N(0, (σC)²), per parameter (not yet divided by the
    expected batch size). An empty batch gives pure noise.

    With `canaries` (the white-box audit's own run only), the sampled canaries' gradients are
    clipped by the same function and added to the noise before the patients' sum, as in
    `make_fast_dp_step`."""
    if len(x):
        sums, _, _ = clipped_grad_sum(network, x, y, max_grad_norm=max_grad_norm)
    else:
        sums = [torch.zeros_like(p) for p in network.parameters()]
    if canaries is None:
        add_noise_(
            sums, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, noise=noise
        )
        return sums
    _check_noise(noise_multiplier)
    flat = sums[0].new_empty(sum(total.numel() for total in sums))
    noise_and_canaries_(
        flat,
        std=noise_multiplier * max_grad_norm,
        max_grad_norm=max_grad_norm,
        noise=noise,
        canaries=canaries,
    )
    parts = flat.split([total.numel() for total in sums])
    return [total.add_(part.view_as(total)) for total, part in zip(sums, parts, strict=True)]


def noise_and_canaries_(
    flat: torch.Tensor,
    *,
    std: float,
    max_grad_norm: float,
    noise: NoiseSource,
    canaries: DiracCanaries | None,
) -> torch.Tensor:
    """Fill `flat` with the step's N(0, std²) noise and add the sampled canaries' gradients,
    clipped by the step's own function — what the white-box adversary observes at the canaries'
    coordinates once every other record is subtracted. The audits' runs (one-run and multi-run)
    go through here, so a fault in the noise or the clipping reaches them as it reaches
    training."""
    _check_clip(max_grad_norm)
    noise.gaussian_(flat, std)
    if canaries is not None:
        canaries.inject_(flat, lambda norms: _clip_factors(norms, max_grad_norm))
    return flat


def clipped_noisy_update_sum(
    updates: torch.Tensor,
    *,
    max_norm: float,
    noise_multiplier: float,
    noise: NoiseSource,
    canaries: DiracCanaries | None = None,
) -> torch.Tensor:
    """Client-level DP (DP-FedAvg): Σ clip(uᵢ, C) + N(0, (σC)²) over the rows of `updates`
    (one flattened update per client), clipped and noised by the step's own functions. With
    `canaries` (the white-box audit's own run only), the sampled canary clients are added to the
    noise as in `make_fast_dp_step`."""
    _check_noise(noise_multiplier)
    if updates.dim() != 2:
        raise ValueError(f"updates must be a (clients × parameters) matrix, got {updates.shape}")
    total = noise_and_canaries_(
        updates.new_empty(updates.shape[1]),
        std=noise_multiplier * max_norm,
        max_grad_norm=max_norm,
        noise=noise,
        canaries=canaries,
    )
    if len(updates):
        total.add_(_clip_factors(updates.norm(dim=1), max_norm) @ updates)
    return total


def _same_params(plan: _Plan, network: nn.Module) -> bool:
    current = tuple(network.parameters())
    return len(current) == len(plan.params) and all(
        a is b for a, b in zip(current, plan.params, strict=True)
    )


class _GradBuffer:
    """One flat tensor whose views are the parameters' .grad, so the noise is a single draw."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        self.params = tuple(params)
        sizes = [p.numel() for p in params]
        self.flat = torch.empty(sum(sizes), dtype=params[0].dtype, device=params[0].device)
        self.views = [v.view_as(p) for v, p in zip(self.flat.split(sizes), params, strict=True)]

    def attach(self) -> list[torch.Tensor]:
        """Make each .grad our view again (e.g. after zero_grad(set_to_none=True))."""
        for p, view in zip(self.params, self.views, strict=True):
            if p.grad is not view:
                p.grad = view
        return self.views


def make_fast_dp_step(
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    noise: NoiseSource,
    canaries: DiracCanaries | None = None,
) -> Step:
    """A loop `Step`: (clipped sum + N(0, (σC)²)) / expected batch size written into p.grad,
    then optimizer.step(). Returns detached logits. An empty batch gives a pure-noise step.

    With `canaries` (the white-box audit's own run only), the sampled canaries' gradients are
    clipped by the same function and added to the same noisy sum.

    The network's layer plan and a flat gradient buffer (the parameters' .grad are views of it)
    are built on first use and kept while the step is called with the same network object
    holding the same parameter objects.
    """
    _check_clip(max_grad_norm)
    _check_noise(noise_multiplier, expected_batch_size)
    std = noise_multiplier * max_grad_norm
    cached: list = [lambda: None, None, None]  # [weakref to network, plan, buffer]

    def prepared(network: nn.Module) -> tuple[_Plan, _GradBuffer]:
        if cached[0]() is not network or not _same_params(cached[1], network):
            plan = _plan(network)
            cached[:] = [weakref.ref(network), plan, _GradBuffer(plan.params)]
        return cached[1], cached[2]

    def step(
        network: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        plan, buffer = prepared(network)
        _check_batch(x, y)
        inputs, grads, logits = _passes(plan, x, y)
        with torch.no_grad():
            factors = _clip_factors(_norms(plan, inputs, grads), max_grad_norm)
            views = buffer.attach()
            noise_and_canaries_(
                buffer.flat, std=std, max_grad_norm=max_grad_norm, noise=noise, canaries=canaries
            )
            _accumulate(plan, inputs, grads, factors, views)
            buffer.flat.div_(expected_batch_size)
        optimizer.step()
        return logits

    return step


def make_opacus_step(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    noise: NoiseSource,
) -> tuple[Step, Callable[[], None]]:
    """Reference engine: Opacus GradSampleModule (hooks) + DPOptimizer drawing from `noise`
    (in `secure_mode` unless the source is reproducible); returns (step, close)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    _check_noise(noise_multiplier, expected_batch_size)
    module = GradSampleModule(network, loss_reduction="mean")
    device = next(network.parameters()).device
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=noise.generator(device),
        secure_mode=True,
    )

    def step(
        _network: nn.Module, _optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        dp_optimizer.zero_grad(set_to_none=True)
        logits = module(x)
        loss = F.cross_entropy(logits, y) if len(x) else logits.sum() * 0.0
        with warnings.catch_warnings():  # inputs never require grad; Opacus's hooks still fire
            warnings.filterwarnings("ignore", message="Full backward hook")
            loss.backward()
        dp_optimizer.step()
        return logits.detach()

    return step, module._close


def make_dp_step(
    engine: str,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    noise: NoiseSource,
    canaries: DiracCanaries | None = None,
) -> tuple[Step, Callable[[], None], str]:
    """(step, close, engine used): `fast` where it applies, else Opacus. Canaries need the
    fast engine."""
    if engine not in ENGINES:
        raise ValueError(f"unknown DP engine {engine!r}; valid: {', '.join(ENGINES)}")
    mechanism = dict(
        max_grad_norm=max_grad_norm,
        noise_multiplier=noise_multiplier,
        expected_batch_size=expected_batch_size,
        noise=noise,
    )
    if engine == "fast" and supports(network):
        return make_fast_dp_step(**mechanism, canaries=canaries), lambda: None, "fast"
    if canaries is not None:
        raise ValueError("gradient canaries need the fast DP engine and an MLP it supports")
    step, close = make_opacus_step(network, optimizer, **mechanism)
    return step, close, "opacus"
