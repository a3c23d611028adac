"""Shadow models for LiRA: K small MLPs trained at once, vectorized over models.

The K networks share one architecture; their parameters are stacked along a leading model axis
(weights (K, out, in), biases (K, out)) and every layer is one batched matrix product. Each step
gathers each model's own batch rows, (K, B) indices into the shared pool, so the pool is never
copied K times. Forward and backward are written by hand (no autograd): the per-sample gradients
of a Linear layer are outer products, so DP-SGD's per-sample norms come in closed form as in
`medpriv.privacy.clipping`. torch.optim works elementwise, so one Adam or SGD over the stacked
tensors is exactly K independent optimizers.

Models with fewer rows than the largest batch get padding rows of weight zero; a padding row
repeats one of the model's own rows, so rows outside a model's IN set are never read for it.
All randomness (initialization, permutations, Poisson samples, dropout) comes from one
torch.Generator seeded by `seed`, and the DP noise from the privacy core's reproducible
`NoiseSource` for the same seed: shadows are the attacker's simulation, so replayable draws are
what they need; torch's global RNG is left alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medpriv.models import MLP
from medpriv.privacy.clipping import CLIP_EPS
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.calibration import Platt

# Rows per model and chunk when scoring: bounds the (K, rows, width) activations.
_SCORE_ROWS = 1 << 17
OPTIMIZERS = ("adam", "sgd")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ShadowRecipe:
    """How the target was trained; shadows repeat it."""

    hidden: tuple[int, ...]
    epochs: int  # shadows train exactly this many epochs (no early stopping)
    batch_size: int  # non-private: shuffled mini-batch size; DP: ignored (sample_rate used)
    lr: float
    optimizer: str  # "adam" | "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.0
    calibrate: bool = False  # Platt scaling of each shadow on (x_val, y_val)
    prior_init: bool = False  # output bias starts at logit(mean(y_val)) as MLP.start_at_prior
    noise_multiplier: float | None = None  # None = non-private
    max_grad_norm: float | None = None
    sample_rate: float | None = None  # DP: Poisson rate q per step for each model
    steps_per_epoch: int | None = None  # DP: steps per epoch (as DPPlan: round(1/q))

    @property
    def private(self) -> bool:
        return self.noise_multiplier is not None

    def problems(self) -> list[str]:
        """What is wrong with this recipe (empty when it can be trained)."""
        found = []
        if self.epochs < 1 or self.lr <= 0 or min(self.hidden, default=1) < 1:
            found.append("epochs >= 1, lr > 0 and positive hidden widths (or none) are needed")
        if self.optimizer not in OPTIMIZERS:
            found.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.dropout < 1:
            found.append("dropout must be in [0, 1)")
        if not self.private:
            if self.batch_size < 1:
                found.append("batch_size must be >= 1")
            return found
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            found.append("noise_multiplier must be >= 0 and finite")
        if self.max_grad_norm is None or not 0 < self.max_grad_norm < math.inf:
            found.append("DP shadows need a positive finite max_grad_norm")
        if self.sample_rate is None or not 0 < self.sample_rate <= 1:
            found.append("DP shadows need a sample_rate in (0, 1]")
        if self.steps_per_epoch is None or self.steps_per_epoch < 1:
            found.append("DP shadows need steps_per_epoch >= 1")
        return found


class StackedMLP:
    """K MLPs with stacked parameters: weights[l] has shape (K, out, in), biases[l] (K, out).

    Initialization follows nn.Linear's default distribution (kaiming-uniform with a=√5, i.e.
    U(±1/√in) for weights and biases), drawn from `self.generator`, seeded by `seed`; training
    keeps drawing from the same generator.
    """

    def __init__(
        self,
        k: int,
        in_features: int,
        hidden: Sequence[int],
        *,
        seed: int,
        dropout: float = 0.0,
    ) -> None:
        if k < 1 or in_features < 1:
            raise ValueError(f"need k >= 1 and in_features >= 1, got {k} and {in_features}")
        self.k, self.in_features, self.hidden = k, in_features, tuple(hidden)
        self.dropout = float(dropout)
        self.generator = torch.Generator().manual_seed(seed)
        self.noise = NoiseSource.reproducible(seed)  # the attacker's simulation: replayable
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        widths = [in_features, *self.hidden, 2]
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(self._uniform((k, fan_out, fan_in), bound))
            self.biases.append(self._uniform((k, fan_out), bound))
        self.platt_scale: torch.Tensor | None = None
        self.platt_shift: torch.Tensor | None = None

    def _uniform(self, shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return torch.empty(shape).uniform_(-bound, bound, generator=self.generator)

    @classmethod
    def from_networks(cls, networks: Sequence[MLP]) -> StackedMLP:
        """Stack existing MLPs of one architecture (their weights are copied)."""
        if not networks:
            raise ValueError("from_networks needs at least one network")
        first = networks[0]
        dropout = next((m.p for m in first if isinstance(m, nn.Dropout)), 0.0)
        stacked = cls(len(networks), first.in_features, first.hidden, seed=0, dropout=dropout)
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in networks]
        with torch.no_grad():
            for layer in range(len(stacked.weights)):
                stacked.weights[layer] = torch.stack([ls[layer].weight.float() for ls in linears])
                stacked.biases[layer] = torch.stack([ls[layer].bias.float() for ls in linears])
        return stacked

    @property
    def parameters(self) -> list[torch.Tensor]:
        """[W0, b0, W1, b1, ...], each with the model axis first (MLP.parameters() order)."""
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair]

    def set_output_prior(self, positive_rate: float) -> None:
        """Every model's output bias at [-l/2, l/2], l = logit(rate), as MLP.start_at_prior."""
        rate = min(max(positive_rate, 1e-3), 1 - 1e-3)
        log_odds = math.log(rate / (1 - rate))
        self.biases[-1][:] = torch.tensor([-log_odds / 2, log_odds / 2])

    @torch.no_grad()
    def margins(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """(K, n) float64 margins logit1 - logit0, eval mode, Platt maps applied if fitted."""
        x = _as_float_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be (n, {self.in_features}), got {tuple(x.shape)}")
        chunk = max(1, _SCORE_ROWS // self.k)
        parts = [self._eval_margins(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        out = torch.cat(parts, dim=1) if parts else torch.zeros((self.k, 0))
        margins = out.double()
        if self.platt_scale is not None and self.platt_shift is not None:
            margins = margins * self.platt_scale[:, None] + self.platt_shift[:, None]
        return margins.numpy()

    def _eval_margins(self, x: torch.Tensor) -> torch.Tensor:
        w0, b0 = self.weights[0], self.biases[0]
        k, width = w0.shape[:2]
        flat = torch.addmm(b0.reshape(-1), x, w0.reshape(k * width, -1).T)  # one shared GEMM
        h = flat.view(len(x), k, width).transpose(0, 1)
        for w, b in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(b.unsqueeze(1), h.relu_(), w.transpose(1, 2))
        return h[..., 1] - h[..., 0]


def _as_float_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


# --- forward and backward ---------------------------------------------------------------------

Saved = tuple[list[torch.Tensor], list[torch.Tensor | None], torch.Tensor]


def _dropout_scale(shape: torch.Size, p: float, generator: torch.Generator) -> torch.Tensor:
    """Float mask, 1/keep-rate where kept, 0 where dropped; the drop probability is p rounded to
    a multiple of 2⁻¹⁶. Sixteen random bits per entry (four entries per 64-bit draw) and float
    arithmetic only: several times cheaper than bernoulli_ or boolean masks."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(
        -(2**63), None, generator=generator
    )
    bits = words.view(torch.int16)[:n].view(shape)
    dropped = round(p * 65536)
    threshold = dropped - 32768  # kept when bits >= threshold
    mask = bits.to(torch.float32).sub_(threshold - 1).clamp_(0.0, 1.0)
    return mask.mul_(65536 / (65536 - dropped))


def _forward(stacked: StackedMLP, x: torch.Tensor) -> Saved:
    """Training-mode forward: (each layer's input, each hidden layer's dropout mask or None,
    logits (K, B, 2)). A hidden layer's input to the next layer is its post-activation, which
    ReLU's backward thresholds on."""
    inputs: list[torch.Tensor] = []
    masks: list[torch.Tensor | None] = []
    h = x
    last = len(stacked.weights) - 1
    for layer, (w, b) in enumerate(zip(stacked.weights, stacked.biases, strict=True)):
        inputs.append(h)
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if layer == last:
            break
        h = h.relu_()
        mask = None
        if stacked.dropout > 0:
            mask = _dropout_scale(h.shape, stacked.dropout, stacked.generator)
            h = h.mul_(mask)
        masks.append(mask)
    return inputs, masks, h


def _loss_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(cross-entropy)/d(logits) per row: softmax - one-hot, (K, B, 2)."""
    g = torch.softmax(logits, dim=2)
    return g.scatter_add_(2, y.unsqueeze(2), torch.full_like(g[..., :1], -1.0))


def _backward(
    stacked: StackedMLP,
    inputs: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    g: torch.Tensor,
) -> list[torch.Tensor]:
    """Gradients w.r.t. every Linear's outputs, (K, B, out) per layer, from the logits' g."""
    grads = [g]
    for layer in range(len(masks) - 1, -1, -1):
        g = torch.bmm(g, stacked.weights[layer + 1])
        g = torch.ops.aten.threshold_backward(g, inputs[layer + 1], 0)  # ReLU, dropped too
        mask = masks[layer]
        if mask is not None:
            g = g.mul_(mask)
        grads.append(g)
    return grads[::-1]


def _ensure_grads(stacked: StackedMLP) -> list[torch.Tensor]:
    for p in stacked.parameters:
        if p.grad is None or p.grad.shape != p.shape:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in stacked.parameters]


def _write_grads(
    inputs: list[torch.Tensor],
    grads: list[torch.Tensor],
    into: list[torch.Tensor],
    *,
    accumulate: bool,
) -> None:
    """into[2l] (+)= G_lᵀ A_l and into[2l+1] (+)= Σ_rows G_l, per model."""
    for layer, (a, g) in enumerate(zip(inputs, grads, strict=True)):
        weight, bias = into[2 * layer], into[2 * layer + 1]
        if accumulate:
            weight.baddbmm_(g.transpose(1, 2), a)
            bias.add_(g.sum(1))
        else:
            torch.bmm(g.transpose(1, 2), a, out=weight)
            torch.sum(g, 1, out=bias)


@torch.no_grad()
def _step_nonprivate(
    stacked: StackedMLP,
    optimizer: torch.optim.Optimizer,
    x_batch: torch.Tensor,
    y_batch: torch.Tensor,
    weight_mask: torch.Tensor,
) -> None:
    """One optimizer step per model on its batch: mean cross-entropy over its real rows.

    x_batch (K, B, d), y_batch (K, B) int64, weight_mask (K, B): 1 for real rows, 0 padding.
    """
    inputs, masks, logits = _forward(stacked, x_batch)
    weight = weight_mask.to(logits.dtype)
    weight = weight / weight.sum(1, keepdim=True).clamp(min=1.0)
    g = _loss_grad(logits, y_batch).mul_(weight.unsqueeze(2))
    grads = _backward(stacked, inputs, masks, g)
    _write_grads(inputs, grads, _ensure_grads(stacked), accumulate=False)
    optimizer.step()


@torch.no_grad()
def _clipped_grad_sums(
    stacked: StackedMLP,
    x_batch: torch.Tensor,
    y_batch: torch.Tensor,
    weight_mask: torch.Tensor,
    *,
    max_grad_norm: float,
    into: list[torch.Tensor] | None = None,
    row_sq_norms: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per model, the sum over its real rows of per-sample gradients clipped to max_grad_norm.

    Per-sample norm² = Σ_layers ||G_i||² (||A_i||² + 1) (weight and bias), clip factor
    min(1, C / (norm + 1e-6)), zero for padding rows. Added into `into` (parameter order, model
    axis first) when given, else into zeros. `row_sq_norms` (K, B): ||x_i||², if precomputed.
    """
    inputs, masks, logits = _forward(stacked, x_batch)
    grads = _backward(stacked, inputs, masks, _loss_grad(logits, y_batch))
    sq = torch.zeros_like(weight_mask, dtype=logits.dtype)
    for layer, (a, g) in enumerate(zip(inputs, grads, strict=True)):
        a_sq = row_sq_norms if layer == 0 and row_sq_norms is not None else a.square().sum(2)
        sq += g.square().sum(2) * (a_sq + 1.0)
    factors = (max_grad_norm / (sq.sqrt_() + CLIP_EPS)).clamp_(max=1.0)
    factors.mul_(weight_mask.to(factors.dtype)).unsqueeze_(2)
    if into is None:
        into = [torch.zeros_like(p) for p in stacked.parameters]
    _write_grads(inputs, [g * factors for g in grads], into, accumulate=True)
    return into


class _NoisyGrads:
    """One flat buffer whose views are the parameters' .grad, so the noise is a single draw."""

    def __init__(self, stacked: StackedMLP, expected_batch: torch.Tensor) -> None:
        params = stacked.parameters
        sizes = [p.numel() for p in params]
        self.flat = torch.empty(sum(sizes))
        self.views = [v.view_as(p) for v, p in zip(self.flat.split(sizes), params, strict=True)]
        for p, v in zip(params, self.views, strict=True):
            p.grad = v
        inverse = 1.0 / expected_batch.to(torch.float32)
        self.inverse = [inverse.view(-1, *[1] * (p.dim() - 1)) for p in params]


@torch.no_grad()
def _step_private(
    stacked: StackedMLP,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    buffer: _NoisyGrads,
    recipe: ShadowRecipe,
) -> None:
    """DP-SGD: (clipped sum + N(0, (σC)²)) / expected batch size, per model; then the step."""
    x_batch, y_batch, weight, row_sq = batch
    stacked.noise.gaussian_(
        buffer.flat, float(recipe.noise_multiplier) * float(recipe.max_grad_norm)
    )
    if x_batch.shape[1] > 0:
        _clipped_grad_sums(
            stacked,
            x_batch,
            y_batch,
            weight,
            max_grad_norm=float(recipe.max_grad_norm),
            into=buffer.views,
            row_sq_norms=row_sq,
        )
    for view, inverse in zip(buffer.views, buffer.inverse, strict=True):
        view.mul_(inverse)
    optimizer.step()


# --- sampling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """The shared rows and, per model, its IN rows (padded with its first IN row)."""

    x: torch.Tensor  # (n, d) float32
    y: torch.Tensor  # (n,) int64
    sq_norms: torch.Tensor  # (n,) ||x_i||²
    rows: torch.Tensor  # (K, max n_in) indices of each model's IN rows, then padding
    counts: torch.Tensor  # (K,) n_in per model

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = idx.reshape(-1)
        x = self.x.index_select(0, flat).view(*idx.shape, self.x.shape[1])
        return x, self.y.index_select(0, flat).view(idx.shape)


def _make_pool(x: np.ndarray, y: np.ndarray, in_mask: np.ndarray) -> _Pool:
    x_t = _as_float_tensor(x)
    y_t = torch.from_numpy(np.asarray(y).astype(np.int64))
    mask = torch.from_numpy(np.asarray(in_mask, dtype=bool))
    if x_t.dim() != 2 or y_t.shape != (len(x_t),) or mask.dim() != 2:
        raise ValueError("need x (n, d), y (n,) and in_mask (K, n)")
    if mask.shape[1] != len(x_t):
        raise ValueError(f"in_mask has {mask.shape[1]} columns for {len(x_t)} rows")
    if not bool(((y_t == 0) | (y_t == 1)).all()):
        raise ValueError("labels must be 0 or 1")
    counts = mask.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("every shadow model needs at least one IN row")
    order = torch.sort(mask.to(torch.uint8), dim=1, descending=True, stable=True).indices
    rows = order[:, : int(counts.max())]
    padding = torch.arange(rows.shape[1]) >= counts.unsqueeze(1)
    rows = torch.where(padding, rows[:, :1], rows)
    sq = torch.zeros(len(x_t))
    sq[rows.unique()] = x_t[rows.unique()].square().sum(1)  # IN rows only: the rest may be NaN
    return _Pool(x_t, y_t, sq, rows, counts)


def _epoch_batches(
    pool: _Pool, batch_size: int, generator: torch.Generator
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each model's own random permutation of its IN rows, cut into (idx, real) batches."""
    k, width = pool.rows.shape
    real = torch.arange(width) < pool.counts.unsqueeze(1)
    keys = torch.rand(k, width, generator=generator).masked_fill_(~real, 2.0)
    idx = pool.rows.gather(1, keys.argsort(dim=1))  # padding sorts last, at the padded slots
    return [
        (idx[:, s : s + batch_size], real[:, s : s + batch_size])
        for s in range(0, width, batch_size)
    ]


def _poisson_batch(
    pool: _Pool, rate: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each IN row of each model independently with probability `rate`: (idx, real), (K, S).

    The gaps between selected rows are geometric, so the work is O(K · expected batch size)
    rather than O(K · n).
    """
    k = pool.rows.shape[0]
    n_in = pool.counts.unsqueeze(1)
    if rate >= 1.0:  # every IN row, every step (a dataset smaller than the expected batch)
        return pool.rows, torch.arange(pool.rows.shape[1]) < n_in
    mean = rate * float(pool.counts.max())
    draws = int(mean + 6 * math.sqrt(mean) + 16)
    positions = torch.empty(k, 0, dtype=torch.int64)
    last = torch.full((k, 1), -1, dtype=torch.int64)
    while bool((last < n_in).any()):
        gaps = torch.empty(k, draws, dtype=torch.float64).geometric_(rate, generator=generator)
        more = last + gaps.cumsum(1).to(torch.int64)
        positions, last = torch.cat([positions, more], 1), more[:, -1:]
    real = positions < n_in
    size = int(real.sum(1).max())
    real, positions = real[:, :size], positions[:, :size]
    idx = pool.rows.gather(1, torch.where(real, positions, 0))
    return idx, real


# --- training ---------------------------------------------------------------------------------


def _optimizer(stacked: StackedMLP, recipe: ShadowRecipe) -> torch.optim.Optimizer:
    """Adam or SGD with momentum over the stacked tensors: elementwise, so K independent ones."""
    params, decay = stacked.parameters, recipe.weight_decay
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=decay, fused=True
        )
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=decay, fused=True)


def _train_nonprivate(
    stacked: StackedMLP,
    optimizer: torch.optim.Optimizer,
    pool: _Pool,
    recipe: ShadowRecipe,
    progress: Progress | None,
) -> None:
    for epoch in range(1, recipe.epochs + 1):
        for idx, real in _epoch_batches(pool, recipe.batch_size, stacked.generator):
            x_batch, y_batch = pool.gather(idx)
            _step_nonprivate(stacked, optimizer, x_batch, y_batch, real)
        if progress is not None:
            progress(epoch, recipe.epochs)


def _train_private(
    stacked: StackedMLP,
    optimizer: torch.optim.Optimizer,
    pool: _Pool,
    recipe: ShadowRecipe,
    progress: Progress | None,
) -> None:
    rate = float(recipe.sample_rate)
    buffer = _NoisyGrads(stacked, rate * pool.counts)
    for epoch in range(1, recipe.epochs + 1):
        for _ in range(int(recipe.steps_per_epoch)):
            idx, real = _poisson_batch(pool, rate, stacked.generator)
            x_batch, y_batch = pool.gather(idx)
            row_sq = pool.sq_norms[idx]
            _step_private(stacked, optimizer, (x_batch, y_batch, real, row_sq), buffer, recipe)
        if progress is not None:
            progress(epoch, recipe.epochs)


def _calibrate(stacked: StackedMLP, x_val: np.ndarray, y_val: np.ndarray) -> None:
    """Fit a Platt map per model on the validation rows."""
    margins = stacked.margins(x_val)
    fits = [Platt.fit(m, y_val) for m in margins]
    stacked.platt_scale = torch.tensor([f.scale for f in fits], dtype=torch.float64)
    stacked.platt_shift = torch.tensor([f.shift for f in fits], dtype=torch.float64)


def train_shadows(
    x: np.ndarray,
    y: np.ndarray,
    in_mask: np.ndarray,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    recipe: ShadowRecipe,
    seed: int,
    progress: Progress | None = None,
) -> StackedMLP:
    """Model k trains only on rows where in_mask[k] is True (in_mask shape (K, n), bool).

    Non-private: per epoch, each model's own permutation of its IN rows in mini-batches of
    `batch_size` (ceil(max n_in / batch_size) steps; a model with fewer rows gets padded, or
    for its last batches empty, batches). DP-SGD: `steps_per_epoch · epochs` Poisson-sampled
    steps. `progress(epoch, epochs)` is called after each epoch.
    """
    problems = recipe.problems()
    if problems:
        raise ValueError("invalid shadow recipe: " + "; ".join(problems))
    pool = _make_pool(x, y, in_mask)
    stacked = StackedMLP(
        pool.rows.shape[0], pool.x.shape[1], recipe.hidden, seed=seed, dropout=recipe.dropout
    )
    y_val = np.asarray(y_val)
    if recipe.prior_init:
        stacked.set_output_prior(float(np.mean(y_val)))
    optimizer = _optimizer(stacked, recipe)
    train = _train_private if recipe.private else _train_nonprivate
    train(stacked, optimizer, pool, recipe, progress)
    if recipe.calibrate:
        _calibrate(stacked, x_val, y_val)
    return stacked
