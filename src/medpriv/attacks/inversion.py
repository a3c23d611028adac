"""Gradient inversion of federated client updates on tabular data (TabLeak, Vero et al. 2023).

Threat model: an honest-but-curious server holds the global model a client started from, sees
the client's FedSGD gradient (or FedAvg weight update), knows the batch size (and for FedAvg the
local recipe), the feature layout and a prior over the features (e.g. column means and level
frequencies of public data). It wants the client's rows.

1. Labels first (iDLG, Zhao et al. 2020; count estimate as in LLG, Wainakh et al. 2022): for
   mean cross-entropy the output bias gradient is mean(softmax − onehot). With one row only the
   true class has a negative entry (exact); with B rows the class counts are
   B·(p̄ − grad_b), p̄ the model's mean predicted probability on a batch drawn from the prior.
2. Features (Geiping et al. 2020 with TabLeak's relaxation): a dummy batch whose continuous
   columns are free (started from the prior) and whose binary columns and one-hot groups are
   sigmoid / softmax of free logits is optimized with Adam so that its gradient (FedSGD) or its
   simulated, unrolled local training (FedAvg, torch.func.functional_call) matches the observed
   one in cosine distance. Random restarts run vectorized (torch.func.vmap).
3. Pooling (TabLeak): the restarts' decoded rows are matched to those of the best restart
   (Hungarian, within each label) and combined by the median (continuous) or mode (discrete).
4. Scoring (TabLeak): rows are matched to the true rows (Hungarian on the number of wrong
   features, continuous distance breaking ties); a discrete feature is right when its decoded
   value is, a continuous one when within ±0.319 of the truth in standardized units. The
   distribution baseline scores the prior's most likely record in every row.

Everything runs in float64 on a copy of the parameters, with the network in eval mode (dropout
masks used by the client are unknown to the server). All randomness comes from one
torch.Generator seeded by `seed`; torch's global RNG is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from medpriv.data.preprocess import Preprocessor
from medpriv.errors import MedprivError, raise_all

# TabLeak's tolerance for a continuous feature, in standard deviations.
TOLERANCE = 0.319
DTYPE = torch.float64
Params = dict[str, torch.Tensor]
Observed = Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True)
class FeatureLayout:
    """Where each kind of feature sits in the design matrix.

    `groups` holds (column name, indices of its one-hot columns); continuous, binary and group
    indices together cover every column once.
    """

    names: tuple[str, ...]
    continuous: tuple[int, ...]
    binary: tuple[int, ...]
    groups: tuple[tuple[str, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        used = list(self.continuous) + list(self.binary)
        used += [i for _, idx in self.groups for i in idx]
        problems = []
        if sorted(used) != list(range(len(self.names))):
            problems.append("continuous, binary and group indices must cover each column once")
        if any(not idx for _, idx in self.groups):
            problems.append("every one-hot group needs at least one column")
        raise_all(problems)

    @classmethod
    def from_preprocessor(cls, pre: Preprocessor) -> FeatureLayout:
        """Numeric columns, then missing indicators, then one one-hot group per categorical."""
        names = tuple(pre.feature_names_)
        n_num, n_ind = len(pre.schema.numeric), len(pre.indicator_columns_)
        groups, start = [], n_num + n_ind
        for column, levels in pre.categories_.items():
            groups.append((column, tuple(range(start, start + len(levels)))))
            start += len(levels)
        return cls(
            names=names,
            continuous=tuple(range(n_num)),
            binary=tuple(range(n_num, n_num + n_ind)),
            groups=tuple(groups),
        )

    @property
    def n_features(self) -> int:
        """Columns of the design matrix."""
        return len(self.names)

    @property
    def feature_names(self) -> list[str]:
        """The scored features: continuous, binary, then one per one-hot group."""
        idx = self.continuous + self.binary
        return [self.names[i] for i in idx] + [name for name, _ in self.groups]

    @property
    def n_continuous(self) -> int:
        return len(self.continuous)

    def decode(self, x: np.ndarray) -> np.ndarray:
        """(n, n_scored) values: continuous as is, binary 0/1, a group's level index.

        A group with no column above 0 (an unseen category) decodes to −1.
        """
        x = np.asarray(x, dtype=np.float64)
        cols = [x[:, list(self.continuous)], (x[:, list(self.binary)] >= 0.5).astype(float)]
        for _, idx in self.groups:
            block = x[:, list(idx)]
            cols.append(np.where(block.max(axis=1) > 0, block.argmax(axis=1), -1)[:, None])
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(x), 0))

    def encode(self, decoded: np.ndarray) -> np.ndarray:
        """The inverse of `decode`: a valid design matrix (float64)."""
        out = np.zeros((len(decoded), self.n_features))
        k = self.n_continuous + len(self.binary)
        out[:, list(self.continuous + self.binary)] = decoded[:, :k]
        rows = np.arange(len(decoded))
        for j, (_, idx) in enumerate(self.groups):
            level = decoded[:, k + j].astype(int)
            hit = level >= 0
            out[rows[hit], np.asarray(idx)[level[hit]]] = 1.0
        return out

    def project(self, x: np.ndarray) -> np.ndarray:
        """Round binaries and turn each group into the one-hot of its largest entry."""
        return self.encode(self.decode(x))


@dataclass(frozen=True)
class FeaturePrior:
    """What the attacker knows of the feature distribution: column means and stds.

    For binary and one-hot columns the mean is the rate of ones (the level frequency).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_data(cls, x: np.ndarray) -> FeaturePrior:
        """Column means and stds of reference rows (e.g. public data)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise MedprivError("a prior needs a non-empty 2-d design matrix")
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0), std=np.where(std > 0, std, 1.0))

    @classmethod
    def standard(cls, layout: FeatureLayout) -> FeaturePrior:
        """No data: standardized continuous columns, binaries at ½, uniform levels."""
        mean, std = np.zeros(layout.n_features), np.ones(layout.n_features)
        mean[list(layout.binary)] = 0.5
        for _, idx in layout.groups:
            mean[list(idx)] = 1.0 / len(idx)
        return cls(mean=mean, std=std)

    def guess(self, layout: FeatureLayout, n: int) -> np.ndarray:
        """n copies of the most likely record: means, the majority binary, the modal level."""
        row = self.mean.copy()
        row[list(layout.binary)] = self.mean[list(layout.binary)] > 0.5
        return np.repeat(layout.project(row[None, :]), n, axis=0)

    def sample(self, layout: FeatureLayout, n: int, generator: torch.Generator) -> torch.Tensor:
        """n rows drawn column-wise independently from the prior."""
        mean = torch.as_tensor(self.mean, dtype=DTYPE)
        std = torch.as_tensor(self.std, dtype=DTYPE)
        x = mean + std * torch.randn(n, layout.n_features, generator=generator, dtype=DTYPE)
        if layout.binary:
            b = list(layout.binary)
            rate = mean[b].clamp(0, 1).expand(n, -1)
            x[:, b] = torch.bernoulli(rate, generator=generator)
        for _, idx in layout.groups:
            p = mean[list(idx)].clamp_min(1e-12)
            level = torch.multinomial(p, n, replacement=True, generator=generator)
            x[:, list(idx)] = F.one_hot(level, len(idx)).to(DTYPE)
        return x


@dataclass(frozen=True)
class Reconstruction:
    """The attacker's output: decoded rows (a valid design matrix) and labels, per row."""

    x: np.ndarray
    labels: np.ndarray
    loss: float  # gradient-matching loss of the best restart
    method: str


@dataclass(frozen=True)
class ReconstructionScore:
    """Per-feature accuracy over rows and its means (overall, continuous, discrete)."""

    per_feature: dict[str, float]
    accuracy: float
    continuous: float | None
    categorical: float | None


@dataclass(frozen=True)
class InversionResult:
    """A reconstruction scored against the true batch and the distribution baseline."""

    method: str
    batch_size: int
    score: ReconstructionScore
    baseline: ReconstructionScore
    labels_correct: float
    tolerance: float = TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        """The results.json block: aggregates only, never rows."""
        return {
            "batch_size": self.batch_size,
            "accuracy": self.score.accuracy,
            "baseline_accuracy": self.baseline.accuracy,
            "advantage_over_baseline": self.score.accuracy - self.baseline.accuracy,
            "continuous_accuracy": self.score.continuous,
            "categorical_accuracy": self.score.categorical,
            "baseline_continuous_accuracy": self.baseline.continuous,
            "baseline_categorical_accuracy": self.baseline.categorical,
            "per_feature_accuracy": dict(self.score.per_feature),
            "labels_correct": self.labels_correct,
            "tolerance": self.tolerance,
            "method": self.method,
        }


# --- labels -------------------------------------------------------------------------------


def recover_labels(
    network: nn.Module,
    gradients: Observed,
    *,
    batch_size: int,
    layout: FeatureLayout,
    prior: FeaturePrior | None = None,
    seed: int = 0,
    n_prior: int = 512,
) -> np.ndarray:
    """Labels of a FedSGD batch from the output bias gradient, sorted (counts are what leaks)."""
    observed = _observed(network, gradients, "gradients")
    bias = observed[_output_bias(network)]
    return _labels_from_bias(
        network, bias, batch_size=batch_size, layout=layout, prior=prior, seed=seed, n=n_prior
    )


def _labels_from_bias(
    network: nn.Module,
    bias_grad: torch.Tensor,
    *,
    batch_size: int,
    layout: FeatureLayout,
    prior: FeaturePrior | None,
    seed: int,
    n: int,
) -> np.ndarray:
    prior = prior or FeaturePrior.standard(layout)
    generator = torch.Generator().manual_seed(seed)
    with _eval(network), torch.no_grad():
        x = prior.sample(layout, n, generator)
        p_bar = F.softmax(functional_call(network, _params(network), (x,)), dim=1).mean(0)
    g, b = bias_grad.numpy(), batch_size
    # count_k = Σ_i p_ik − B·g_k with Σ_i p_ik ∈ (0, B): a class with a negative entry is present
    # (iDLG; exact for B = 1). Where float32 saturates p to 0 or 1 the open interval may be
    # empty; then the closed one, and with noisy gradients no bound at all.
    for lower, upper in (
        (np.floor(-b * g) + 1, np.ceil(b * (1 - g)) - 1),
        (np.ceil(-b * g), np.floor(b * (1 - g))),
        (np.zeros_like(g), np.full_like(g, b)),
    ):
        lower, upper = np.clip(lower, 0, b).astype(int), np.clip(upper, 0, b).astype(int)
        if (lower <= upper).all() and lower.sum() <= b <= upper.sum():
            break
    raw = np.clip(b * (p_bar.numpy() - g), lower, upper)
    counts = np.floor(raw).astype(int)
    while counts.sum() != b:  # largest remainder, within the bounds
        step = 1 if counts.sum() < b else -1
        room = counts < upper if step > 0 else counts > lower
        counts[int(np.argmax(np.where(room, step * (raw - counts), -np.inf)))] += step
    return np.repeat(np.arange(len(counts)), counts).astype(np.int64)


# --- reconstruction -----------------------------------------------------------------------


def invert_fedsgd(
    network: nn.Module,
    gradients: Observed,
    *,
    batch_size: int,
    layout: FeatureLayout,
    prior: FeaturePrior | None = None,
    labels: Sequence[int] | None = None,
    steps: int = 400,
    lr: float = 0.1,
    restarts: int = 8,
    seed: int = 0,
) -> Reconstruction:
    """Reconstruct the batch behind one FedSGD gradient (mean cross-entropy over the batch).

    `gradients`: per parameter, in `network.parameters()` order or keyed by parameter name.
    `labels`: known labels; by default they are recovered from the output bias gradient.
    """
    _check(network, layout, prior, batch_size=batch_size, steps=steps, lr=lr, restarts=restarts)
    observed = _observed(network, gradients, "gradients")
    if labels is None:
        bias = observed[_output_bias(network)]
        y = _labels_from_bias(
            network, bias, batch_size=batch_size, layout=layout, prior=prior, seed=seed, n=512
        )
    else:
        y = _given_labels(labels, batch_size)
    params = _params(network)
    target = torch.cat([observed[k].flatten() for k in params])
    labels_t = torch.as_tensor(y)

    def batch_grad(x: torch.Tensor) -> torch.Tensor:
        g = grad(_loss)(params, network, x, labels_t)
        return torch.cat([g[k].flatten() for k in params])

    return _reconstruct(
        network,
        lambda xs: _cosine_distance(vmap(batch_grad)(xs), target),
        y,
        layout=layout,
        prior=prior,
        steps=steps,
        lr=lr,
        restarts=restarts,
        seed=seed,
        method="fedsgd gradient inversion (TabLeak: softmax relaxation, cosine matching, pooling)",
    )


def invert_fedavg(
    network: nn.Module,
    update: Observed,
    *,
    local_epochs: int,
    local_lr: float,
    local_batch_size: int,
    n_examples: int,
    local_momentum: float = 0.0,
    local_weight_decay: float = 0.0,
    layout: FeatureLayout,
    prior: FeaturePrior | None = None,
    labels: Sequence[int] | None = None,
    steps: int = 400,
    lr: float = 0.1,
    restarts: int = 8,
    seed: int = 0,
) -> Reconstruction:
    """Reconstruct a client's rows from a FedAvg update (weights after − weights before).

    The client is assumed to run `local_epochs` passes of torch.optim.SGD (momentum, weight
    decay as given) over its `n_examples` rows in mini-batches of `local_batch_size`; the
    attacker unrolls the same steps on the dummy rows in a fixed order (the client's shuffling
    is unknown, so batches of the dummy rows stand for some partition of the true rows).
    Labels are recovered from the bias update read as −lr·(mean gradient) summed over the
    steps (momentum included), i.e. as if the gradient stayed constant during local training.
    """
    _check(network, layout, prior, batch_size=n_examples, steps=steps, lr=lr, restarts=restarts)
    raise_all(
        [
            msg
            for bad, msg in (
                (local_epochs < 1 or local_batch_size < 1, "local epochs and batch size >= 1"),
                (not local_lr > 0, "local_lr must be > 0"),
                (not 0 <= local_momentum < 1, "local_momentum must be in [0, 1)"),
            )
            if bad
        ]
    )
    observed = _observed(network, update, "update")
    n_steps = local_epochs * math.ceil(n_examples / local_batch_size)
    # with momentum μ, step t moves by lr·g·(1 − μ^(t+1))/(1 − μ) for a constant gradient g
    scale = sum((1 - local_momentum ** (t + 1)) / (1 - local_momentum) for t in range(n_steps))
    if labels is None:
        bias = -observed[_output_bias(network)] / (local_lr * scale)
        y = _labels_from_bias(
            network, bias, batch_size=n_examples, layout=layout, prior=prior, seed=seed, n=512
        )
    else:
        y = _given_labels(labels, n_examples)
    params = _params(network)
    target = torch.cat([observed[k].flatten() for k in params])
    labels_t = torch.as_tensor(y)
    recipe = (local_epochs, local_lr, local_batch_size, local_momentum, local_weight_decay)

    def simulated_update(x: torch.Tensor) -> torch.Tensor:
        after = _local_sgd(network, params, x, labels_t, *recipe)
        return torch.cat([(after[k] - params[k]).flatten() for k in params])

    return _reconstruct(
        network,
        lambda xs: _cosine_distance(vmap(simulated_update)(xs), target),
        y,
        layout=layout,
        prior=prior,
        steps=steps,
        lr=lr,
        restarts=restarts,
        seed=seed,
        method=(
            "fedavg update inversion (unrolled local SGD; TabLeak: softmax relaxation, cosine "
            "matching, pooling)"
        ),
    )


def _local_sgd(
    network: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch: int,
    momentum: float,
    weight_decay: float,
) -> Params:
    """torch.optim.SGD's update rule, unrolled and differentiable in x."""
    p, buf = dict(params), None
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            g = grad(_loss)(p, network, x[start : start + batch], y[start : start + batch])
            g = {k: g[k] + weight_decay * p[k] for k in p} if weight_decay else g
            if momentum:
                buf = g if buf is None else {k: momentum * buf[k] + g[k] for k in p}
                g = buf
            p = {k: p[k] - lr * g[k] for k in p}
    return p


def _reconstruct(
    network: nn.Module,
    objective: Callable[[torch.Tensor], torch.Tensor],
    y: np.ndarray,
    *,
    layout: FeatureLayout,
    prior: FeaturePrior | None,
    steps: int,
    lr: float,
    restarts: int,
    seed: int,
    method: str,
) -> Reconstruction:
    """Adam on the relaxed dummy batches (one per restart), then pooling."""
    prior = prior or FeaturePrior.standard(layout)
    generator = torch.Generator().manual_seed(seed)
    relaxed = _Relaxed(layout, prior, (restarts, len(y)), generator)
    optimizer = torch.optim.Adam(relaxed.parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    with _eval(network):
        for _ in range(steps):
            losses = objective(relaxed.x())
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            xs = relaxed.x()
            losses = objective(xs)
    pooled = _pool(layout, xs.numpy(), losses.numpy(), y)
    return Reconstruction(x=pooled, labels=y, loss=float(losses.min()), method=method)


class _Relaxed:
    """Dummy batches: free continuous columns, sigmoid binaries, softmax one-hot groups."""

    def __init__(
        self,
        layout: FeatureLayout,
        prior: FeaturePrior,
        shape: tuple[int, int],
        generator: torch.Generator,
    ) -> None:
        def randn(k: int) -> torch.Tensor:
            return torch.randn(*shape, k, generator=generator, dtype=DTYPE)

        cont = list(layout.continuous)
        mean = torch.as_tensor(prior.mean[cont], dtype=DTYPE)
        std = torch.as_tensor(prior.std[cont], dtype=DTYPE)
        self.continuous = (mean + std * randn(len(cont))).requires_grad_()
        self.binary = randn(len(layout.binary)).requires_grad_()
        self.groups = [randn(len(idx)).requires_grad_() for _, idx in layout.groups]
        order = cont + list(layout.binary) + [i for _, idx in layout.groups for i in idx]
        self.inverse = torch.as_tensor(np.argsort(order))

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.continuous, self.binary, *self.groups]

    def x(self) -> torch.Tensor:
        parts = [self.continuous, torch.sigmoid(self.binary)]
        parts += [torch.softmax(g, dim=-1) for g in self.groups]
        return torch.cat(parts, dim=-1)[..., self.inverse]


def _pool(layout: FeatureLayout, xs: np.ndarray, losses: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Match every restart's rows to the best restart's (same label only), then median/mode."""
    decoded = np.stack([layout.decode(x) for x in xs])  # (R, B, F)
    anchor = decoded[int(np.argmin(losses))]
    same_label = y[:, None] == y[None, :]
    for r in range(len(decoded)):
        cost = _row_cost(anchor, decoded[r], layout, TOLERANCE) + 1e6 * ~same_label
        _, cols = linear_sum_assignment(cost)
        decoded[r] = decoded[r][cols]
    k = layout.n_continuous
    pooled = np.empty_like(anchor)
    pooled[:, :k] = np.median(decoded[:, :, :k], axis=0)
    for j in range(k, decoded.shape[2]):
        for i in range(decoded.shape[1]):
            values, counts = np.unique(decoded[:, i, j], return_counts=True)
            # ties go to the best restart's value when it is among the most frequent
            best = values[counts == counts.max()]
            pooled[i, j] = anchor[i, j] if anchor[i, j] in best else best[0]
    return layout.encode(pooled)


# --- scoring ------------------------------------------------------------------------------


def reconstruction_accuracy(
    x_true: np.ndarray,
    x_hat: np.ndarray,
    layout: FeatureLayout,
    *,
    tolerance: float = TOLERANCE,
    aligned: bool = False,
) -> ReconstructionScore:
    """Per-feature accuracy of x_hat after matching its rows to x_true's (Hungarian), or row by
    row when `aligned` (the attacker knows which reconstruction is which record's).

    Discrete features must decode to the same value; continuous ones must lie within
    ±tolerance (standardized units, i.e. standard deviations) of the truth.
    """
    x_true, x_hat = np.asarray(x_true), np.asarray(x_hat)
    if x_true.shape != x_hat.shape or x_true.ndim != 2 or x_true.shape[1] != layout.n_features:
        raise MedprivError(
            f"x_true {x_true.shape} and x_hat {x_hat.shape} must both be (rows, "
            f"{layout.n_features})"
        )
    truth, guess = layout.decode(x_true), layout.decode(x_hat)
    if aligned:
        rows = cols = np.arange(len(truth))
    else:
        rows, cols = linear_sum_assignment(_row_cost(truth, guess, layout, tolerance))
    right = _right(truth[rows], guess[cols], layout, tolerance)
    per_feature = right.mean(axis=0) if len(right) else np.zeros(right.shape[1])
    k = layout.n_continuous
    return ReconstructionScore(
        per_feature=dict(zip(layout.feature_names, map(float, per_feature), strict=True)),
        accuracy=float(per_feature.mean()),
        continuous=float(per_feature[:k].mean()) if k else None,
        categorical=float(per_feature[k:].mean()) if len(per_feature) > k else None,
    )


def baseline_accuracy(
    x_true: np.ndarray,
    layout: FeatureLayout,
    *,
    prior: FeaturePrior,
    tolerance: float = TOLERANCE,
) -> ReconstructionScore:
    """The same score for the prior's most likely record in every row (distribution baseline)."""
    guess = prior.guess(layout, len(x_true))
    return reconstruction_accuracy(x_true, guess, layout, tolerance=tolerance)


def evaluate_inversion(
    reconstruction: Reconstruction,
    *,
    x_true: np.ndarray,
    y_true: np.ndarray,
    layout: FeatureLayout,
    prior: FeaturePrior,
    tolerance: float = TOLERANCE,
) -> InversionResult:
    """Score a reconstruction; labels_correct compares label counts (rows are unordered)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    k = int(max(y_true.max(initial=0), reconstruction.labels.max(initial=0))) + 1
    counts_hat = np.bincount(reconstruction.labels, minlength=k)
    diff = np.abs(np.bincount(y_true, minlength=k) - counts_hat)
    return InversionResult(
        method=reconstruction.method,
        batch_size=len(x_true),
        score=reconstruction_accuracy(x_true, reconstruction.x, layout, tolerance=tolerance),
        baseline=baseline_accuracy(x_true, layout, prior=prior, tolerance=tolerance),
        labels_correct=float(1 - diff.sum() / (2 * len(y_true))),
        tolerance=tolerance,
    )


def _right(a: np.ndarray, b: np.ndarray, layout: FeatureLayout, tolerance: float) -> np.ndarray:
    """Elementwise correctness of decoded rows b against a (same shape)."""
    k = layout.n_continuous
    return np.concatenate([np.abs(a[:, :k] - b[:, :k]) <= tolerance, a[:, k:] == b[:, k:]], axis=1)


def _row_cost(a: np.ndarray, b: np.ndarray, layout: FeatureLayout, tolerance: float) -> np.ndarray:
    """(len(a), len(b)): wrong features, plus 1e-3 × the capped continuous distance."""
    k = layout.n_continuous
    gap = np.abs(a[:, None, :k] - b[None, :, :k])
    wrong = (gap > tolerance).sum(-1) + (a[:, None, k:] != b[None, :, k:]).sum(-1)
    return wrong + 1e-3 * np.minimum(gap, 10.0).sum(-1)


# --- helpers ------------------------------------------------------------------------------


def _loss(params: Params, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(functional_call(network, params, (x,)), y)


def _cosine_distance(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − cos(g_r, target) for each row r of g."""
    norms = g.norm(dim=1) * target.norm()
    return 1 - (g @ target) / norms.clamp_min(1e-30)


def _params(network: nn.Module) -> Params:
    return {k: v.detach().to(DTYPE).cpu() for k, v in network.named_parameters()}


def _output_bias(network: nn.Module) -> str:
    linear = [name for name, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linear or getattr(network.get_submodule(linear[-1]), "bias", None) is None:
        raise MedprivError("label recovery needs a final nn.Linear layer with a bias")
    return f"{linear[-1]}.bias" if linear[-1] else "bias"


def _observed(network: nn.Module, values: Observed, what: str) -> Params:
    """Observed gradients/updates as float64 tensors keyed by parameter name."""
    shapes = {k: v.shape for k, v in network.named_parameters()}
    if isinstance(values, Mapping):
        if set(values) != set(shapes):
            raise MedprivError(f"{what} must be keyed by the parameter names {list(shapes)}")
        items = {k: values[k] for k in shapes}
    else:
        values = list(values)
        if len(values) != len(shapes):
            raise MedprivError(f"{what}: expected {len(shapes)} arrays, got {len(values)}")
        items = dict(zip(shapes, values, strict=True))
    out = {
        k: torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else np.asarray(v))
        .to(DTYPE)
        .cpu()
        for k, v in items.items()
    }
    problems = [
        f"{what} for {k} has shape {tuple(out[k].shape)}, expected {tuple(s)}"
        for k, s in shapes.items()
        if out[k].shape != s
    ]
    problems += [f"{what} for {k} holds NaN or inf" for k in out if not out[k].isfinite().all()]
    raise_all(problems)
    return out


def _given_labels(labels: Sequence[int], n: int) -> np.ndarray:
    y = np.sort(np.asarray(labels, dtype=np.int64))
    if y.shape != (n,) or (y < 0).any():
        raise MedprivError(f"labels must be {n} non-negative class indices")
    return y


def _check(
    network: nn.Module,
    layout: FeatureLayout,
    prior: FeaturePrior | None,
    *,
    batch_size: int,
    steps: int,
    lr: float,
    restarts: int,
) -> None:
    problems = []
    first = next((m for m in network.modules() if isinstance(m, nn.Linear)), None)
    if first is None or first.in_features != layout.n_features:
        problems.append(f"the network's input width must equal the layout's {layout.n_features}")
    d = (layout.n_features,)
    if prior is not None and (prior.mean.shape != d or prior.std.shape != d):
        problems.append(f"the prior must have {layout.n_features} columns")
    if batch_size < 1 or steps < 1 or restarts < 1:
        problems.append("batch_size, steps and restarts must be >= 1")
    if not lr > 0:
        problems.append("lr must be > 0")
    raise_all(problems)


@contextmanager
def _eval(network: nn.Module) -> Iterator[None]:
    """Run with the network in eval mode (no dropout), restoring its mode afterwards."""
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)
