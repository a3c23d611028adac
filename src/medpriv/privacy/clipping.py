"""Per-sample clipping for the MLP family without per-sample gradients (the fast engine).

For an `nn.Linear` with inputs A (B x d_in) and G (B x d_out), the gradient of the summed loss
with respect to its outputs, sample i's weight gradient is the outer product G_i A_iᵀ, so its norm
is ||G_i|| ||A_i||, and its bias gradient is G_i. Combining these over layers gives each sample's
gradient norm over all parameters jointly; the clipped sum is then one matmul per layer,
(c ⊙ G)ᵀ A, and Gᵀ c for the bias. Clipping, noise and scaling follow Opacus 1.6's `DPOptimizer`
(flat clipping, `loss_reduction="mean"`: the noisy sum is divided by the expected batch size).

Networks of Linear, ReLU, Dropout and Identity layers get a hand-written backward (no autograd);
other parameter-free elementwise activations go through one `torch.autograd.grad` call. Noise and
the optimizer step live in `medpriv.privacy.step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Passes = tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]

# Clip factor = C / (norm + CLIP_EPS), capped at 1, as opacus.optimizers.DPOptimizer computes it.
CLIP_EPS = 1e-6
# Layers with a hand-written backward.
_MANUAL = (nn.ReLU, nn.Dropout, nn.Identity)
# Parameter-free layers acting on each element (hence on each sample) on their own.
_ELEMENTWISE = (
    *_MANUAL,
    nn.AlphaDropout,
    nn.CELU,
    nn.ELU,
    nn.GELU,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.Mish,
    nn.ReLU6,
    nn.SELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanh,
    nn.Tanhshrink,
)


@dataclass(frozen=True)
class _Block:
    """One Linear's parameters and the elementwise layers after it, up to the next Linear."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    after: tuple[nn.Module, ...]


@dataclass(frozen=True)
class _Plan:
    """A supported network, cut into blocks."""

    before: tuple[nn.Module, ...]  # elementwise layers ahead of the first Linear
    blocks: tuple[_Block, ...]
    params: tuple[nn.Parameter, ...]  # network.parameters() order
    manual: bool  # every elementwise layer has a hand-written backward


# --- which networks -----------------------------------------------------------------------------


def _flatten(module: nn.Module) -> list[nn.Module] | str:
    """The leaf layers of a plain (possibly nested) nn.Sequential, or why it is not one."""
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return f"{type(module).__name__} is not a plain nn.Sequential"
    leaves: list[nn.Module] = []
    for child in module:
        if isinstance(child, nn.Sequential):
            inner = _flatten(child)
            if isinstance(inner, str):
                return inner
            leaves += inner
        elif type(child) is nn.Linear or type(child) in _ELEMENTWISE:
            leaves.append(child)
        else:
            return (
                f"layer {type(child).__name__} is neither nn.Linear nor a known elementwise layer"
            )
    return leaves


def _blocks(leaves: list[nn.Module]) -> tuple[tuple[nn.Module, ...], list[_Block]]:
    """(layers before the first Linear, one block per Linear)."""
    before: list[nn.Module] = []
    blocks: list[tuple[nn.Linear, list[nn.Module]]] = []
    for module in leaves:
        if isinstance(module, nn.Linear):
            blocks.append((module, []))
        else:
            (blocks[-1][1] if blocks else before).append(module)
    return tuple(before), [_Block(lin.weight, lin.bias, tuple(after)) for lin, after in blocks]


def _plan_or_reason(network: nn.Module) -> _Plan | str:
    leaves = _flatten(network)
    if isinstance(leaves, str):
        return leaves
    before, blocks = _blocks(leaves)
    if not blocks:
        return "the network has no nn.Linear layer"
    params = tuple(p for b in blocks for p in (b.weight, b.bias) if p is not None)
    if len({id(p) for p in params}) != len(params):
        return "an nn.Linear (or one of its parameters) is used more than once"
    if [id(p) for p in network.parameters()] != [id(p) for p in params]:
        return "the network has parameters outside its nn.Linear layers"
    if not all(p.requires_grad for p in params):
        return "every parameter must require gradients"
    if len({(p.dtype, p.device) for p in params}) != 1:
        return "all parameters must share one dtype and device"
    manual = all(type(m) in _MANUAL for m in leaves if not isinstance(m, nn.Linear))
    return _Plan(before, tuple(blocks), params, manual)


def supports(network: nn.Module) -> bool:
    """True when every parameter belongs to an nn.Linear inside a plain nn.Sequential of
    Linear/ReLU/Dropout/other parameter-free elementwise layers."""
    return isinstance(_plan_or_reason(network), _Plan)


def _plan(network: nn.Module) -> _Plan:
    plan = _plan_or_reason(network)
    if isinstance(plan, str):
        raise ValueError(f"fast DP-SGD does not support this network: {plan}")
    return plan


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or y.dim() != 1 or len(x) != len(y):
        raise ValueError(
            "fast DP-SGD needs x of shape (batch, features) and y of shape (batch,); "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _check_clip(max_grad_norm: float) -> None:
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a positive finite number, got {max_grad_norm}")


# --- one forward and one backward through the activations ---------------------------------------


def _dropout_mask(module: nn.Dropout, h: torch.Tensor) -> torch.Tensor | None:
    """The scaled keep-mask nn.Dropout would draw (same RNG use on CPU), or None if inactive."""
    if not module.training or module.p == 0:
        return None
    if module.p == 1:
        return torch.zeros_like(h)
    keep = 1.0 - module.p
    return torch.empty_like(h).bernoulli_(keep).div_(keep)


def _cross_entropy_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(summed cross-entropy)/d(logits) = softmax - one-hot."""
    g = torch.softmax(logits, dim=1)
    minus_one = torch.full((len(y), 1), -1.0, dtype=g.dtype, device=g.device)
    return g.scatter_add_(1, y.unsqueeze(1), minus_one)


TopGrad = Callable[[torch.Tensor], torch.Tensor]


def _manual_pass(plan: _Plan, x: torch.Tensor, top: TopGrad) -> Passes:
    """(Linear inputs, gradients of the summed loss w.r.t. Linear outputs, network output);
    `top(output)` gives each sample's gradient of its loss w.r.t. the network's output."""
    with torch.no_grad():
        h = x
        for module in plan.before:
            h = module(h)
        inputs: list[torch.Tensor] = []
        tapes: list[list[tuple[bool, torch.Tensor]]] = []  # (is a ReLU output, saved tensor)
        for block in plan.blocks:
            inputs.append(h)
            h = F.linear(h, block.weight, block.bias)
            tape: list[tuple[bool, torch.Tensor]] = []
            for module in block.after:
                if type(module) is nn.ReLU:
                    h = torch.relu(h)
                    tape.append((True, h))
                elif type(module) is nn.Dropout and (mask := _dropout_mask(module, h)) is not None:
                    h = h * mask
                    tape.append((False, mask))
            tapes.append(tape)
        g = top(h)
        grads = [g] * len(plan.blocks)
        for i in range(len(plan.blocks) - 1, -1, -1):
            for is_relu, saved in reversed(tapes[i]):
                g = torch.ops.aten.threshold_backward(g, saved, 0) if is_relu else g * saved
            grads[i] = g
            if i:
                g = g @ plan.blocks[i].weight
    return inputs, grads, h


def _autograd_pass(plan: _Plan, x: torch.Tensor, top: TopGrad) -> Passes:
    """As `_manual_pass`, for any elementwise layers: one autograd.grad w.r.t. Linear outputs."""
    with torch.enable_grad():
        h = x.detach()
        for module in plan.before:
            h = module(h)
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for block in plan.blocks:
            inputs.append(h.detach())
            bias = None if block.bias is None else block.bias.detach()
            h = F.linear(h if outputs else h.detach(), block.weight.detach(), bias)
            if not outputs:
                h.requires_grad_(True)  # a leaf: nothing upstream needs gradients
            outputs.append(h)
            for module in block.after:
                h = module(h.clone() if getattr(module, "inplace", False) else h)
        grads = torch.autograd.grad(h, outputs, grad_outputs=top(h.detach()))
    return inputs, list(grads), h.detach()


def _passes(plan: _Plan, x: torch.Tensor, y: torch.Tensor) -> Passes:
    def top(logits: torch.Tensor) -> torch.Tensor:
        return _cross_entropy_grad(logits, y)

    return (_manual_pass if plan.manual else _autograd_pass)(plan, x, top)


@dataclass
class PerSample:
    """One pass of a Linear/elementwise network whose output gradient comes from elsewhere
    (split learning: the server returns it): per-sample norms and clipped sums, as above."""

    plan: _Plan
    inputs: list[torch.Tensor]
    grads: list[torch.Tensor]
    output: torch.Tensor

    @property
    def params(self) -> tuple[nn.Parameter, ...]:
        return self.plan.params

    def norms(self) -> torch.Tensor:
        with torch.no_grad():
            return _norms(self.plan, self.inputs, self.grads)

    def accumulate(self, factors: torch.Tensor, into: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            _accumulate(self.plan, self.inputs, self.grads, factors, into)


def per_sample_pass(network: nn.Module, x: torch.Tensor, top: TopGrad) -> PerSample:
    """Forward `x` through `network`, ask `top(output)` for each sample's output gradient, and
    keep what per-sample clipping needs."""
    plan = _plan(network)
    inputs, grads, output = (_manual_pass if plan.manual else _autograd_pass)(plan, x, top)
    return PerSample(plan, inputs, grads, output)


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Opacus 1.6 flat clipping factors for per-sample norms."""
    _check_clip(max_grad_norm)
    return _clip_factors(norms, max_grad_norm)


# --- clipping -----------------------------------------------------------------------------------


def _norms(
    plan: _Plan, inputs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Per-sample gradient norm over all parameters: the norm of the per-parameter norms."""
    parts: list[torch.Tensor] = []
    for block, a, g in zip(plan.blocks, inputs, grads, strict=True):
        g_norm = torch.linalg.vector_norm(g, dim=1)
        parts.append(g_norm * torch.linalg.vector_norm(a, dim=1))
        if block.bias is not None:
            parts.append(g_norm)
    return torch.linalg.vector_norm(torch.stack(parts, dim=1), dim=1)


def _clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Opacus 1.6 flat clipping: (C / (norm + 1e-6)).clamp(max=1.0)."""
    return (max_grad_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def _accumulate(
    plan: _Plan,
    inputs: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    factors: torch.Tensor,
    into: Sequence[torch.Tensor],
) -> None:
    """Add the clipped per-sample gradients' sum into `into` (one tensor per parameter)."""
    targets = iter(into)
    column = factors.unsqueeze(1)
    for block, a, g in zip(plan.blocks, inputs, grads, strict=True):
        next(targets).addmm_((g * column).T, a)
        if block.bias is not None:
            next(targets).addmv_(g.T, factors)


def clipped_grad_sum(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_grad_norm: float
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(clipped-and-summed gradient per parameter in network.parameters() order, per-sample norms
    BEFORE clipping, logits (detached))."""
    _check_clip(max_grad_norm)
    plan = _plan(network)
    _check_batch(x, y)
    inputs, grads, logits = _passes(plan, x, y)
    with torch.no_grad():
        norms = _norms(plan, inputs, grads)
        summed = [torch.zeros_like(p) for p in plan.params]
        _accumulate(plan, inputs, grads, _clip_factors(norms, max_grad_norm), summed)
    return summed, norms, logits
