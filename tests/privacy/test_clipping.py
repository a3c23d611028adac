"""medpriv.privacy.clipping and .step: the same clipped sum as Opacus, every sample clipped, the
right noise, Poisson masks with probability q."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.nn import functional as F

from medpriv.metrics import auroc
from medpriv.models import MLP, positive_margin
from medpriv.privacy import clipping as dp_fast
from medpriv.privacy.clipping import (
    clipped_grad_sum,
    supports,
)
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.sampler import PoissonBatches
from medpriv.privacy.step import make_fast_dp_step
from medpriv.train.loop import TrainingData, fit_network


def _batch(n: int, features: int, *, classes: int = 2, seed: int = 0, scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen) * scale
    return x, torch.randint(0, classes, (n,), generator=gen)


def _opacus_clipped_sum(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Opacus's clipped sum (DPOptimizer.clip_and_accumulate, hooks mode) and per-sample norms."""
    module = GradSampleModule(copy.deepcopy(network), loss_reduction="sum")
    optimizer = DPOptimizer(
        torch.optim.SGD(module.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=len(x),
        loss_reduction="sum",
    )
    F.cross_entropy(module(x), y, reduction="sum").backward()
    optimizer.clip_and_accumulate()
    params = list(module.parameters())
    per_param = [p.grad_sample.reshape(len(x), -1).norm(2, dim=-1) for p in params]
    return [p.summed_grad for p in params], torch.stack(per_param, dim=1).norm(2, dim=1)


NETWORKS = {
    "mlp-128-64": lambda: MLP(20, (128, 64)),
    "mlp-dropout": lambda: MLP(20, (128, 64), dropout=0.3),
    "mlp-3-hidden": lambda: MLP(20, (16, 12, 8), n_classes=3),
    "tanh-autograd": lambda: nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 2)),
}


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("max_grad_norm", [0.1, 2.0, 1e4])
def test_clipped_sum_matches_opacus(name: str, max_grad_norm: float):
    torch.manual_seed(0)
    network = NETWORKS[name]()
    x, y = _batch(64, 20, classes=3 if "3-hidden" in name else 2)
    torch.manual_seed(7)  # same dropout masks in both forward passes
    ours, norms, logits = clipped_grad_sum(network, x, y, max_grad_norm=max_grad_norm)
    torch.manual_seed(7)
    theirs, their_norms = _opacus_clipped_sum(network, x, y, max_grad_norm)
    assert len(ours) == len(theirs) == len(list(network.parameters()))
    for mine, reference, p in zip(ours, theirs, network.parameters(), strict=True):
        assert mine.shape == p.shape and mine.dtype == torch.float32
        assert (mine - reference).abs().max() < 1e-5
    torch.testing.assert_close(norms, their_norms, rtol=1e-5, atol=1e-6)
    assert logits.shape == (64, 3 if "3-hidden" in name else 2) and not logits.requires_grad
    if max_grad_norm == 0.1:  # some samples clipped, which is what makes the test meaningful
        assert (norms > max_grad_norm).any()


def _build(in_features: int, hidden: list[int], classes: int, activation: str, bias: bool):
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        act = {
            "relu": nn.ReLU(),
            "tanh": nn.Tanh(),
            "gelu": nn.GELU(),
            "elu-inplace": nn.ELU(inplace=True),
        }[activation]
        layers += [nn.Linear(width, size, bias=bias), act]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, classes, bias=bias))


def _slow_per_sample_grads(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, n_params): each row's gradient of its own cross-entropy, one backward per row."""
    rows = []
    for i in range(len(x)):
        loss = F.cross_entropy(network(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, list(network.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@settings(max_examples=25, deadline=None)
@given(
    in_features=st.integers(1, 6),
    hidden=st.lists(st.integers(1, 8), max_size=3),
    classes=st.integers(2, 4),
    batch=st.integers(1, 9),
    max_grad_norm=st.floats(1e-3, 10.0),
    scale=st.floats(0.1, 10.0),
    activation=st.sampled_from(["relu", "tanh", "gelu", "elu-inplace"]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_sample_is_clipped_to_max_grad_norm(
    in_features, hidden, classes, batch, max_grad_norm, scale, activation, bias, seed
):
    torch.manual_seed(seed)
    network = _build(in_features, hidden, classes, activation, bias)
    x, y = _batch(batch, in_features, classes=classes, seed=seed, scale=scale)
    summed, norms, _ = clipped_grad_sum(network, x, y, max_grad_norm=max_grad_norm)
    slow = _slow_per_sample_grads(network, x, y)
    slow_norms = slow.norm(dim=1)
    torch.testing.assert_close(norms, slow_norms, rtol=1e-4, atol=1e-6)
    factors = (max_grad_norm / (slow_norms + 1e-6)).clamp(max=1.0)
    clipped = slow * factors.unsqueeze(1)
    assert (clipped.norm(dim=1) <= max_grad_norm + 1e-5).all()
    flat = torch.cat([s.reshape(-1) for s in summed])
    torch.testing.assert_close(flat, clipped.sum(0), rtol=1e-4, atol=1e-5)


def test_manual_backward_equals_autograd_with_dropout():
    torch.manual_seed(0)
    network = MLP(7, (32, 16), dropout=0.4, n_classes=3)
    x, y = _batch(40, 7, classes=3)
    plan = dp_fast._plan(network)
    assert plan.manual

    def top(logits: torch.Tensor) -> torch.Tensor:
        return dp_fast._cross_entropy_grad(logits, y)

    torch.manual_seed(3)
    manual = dp_fast._manual_pass(plan, x, top)
    torch.manual_seed(3)
    auto = dp_fast._autograd_pass(plan, x, top)
    for mine, reference in zip(manual[0] + manual[1], auto[0] + auto[1], strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(manual[2], auto[2])


def _noise_setup(sigma: float, *, lr: float = 0.0):
    torch.manual_seed(1)
    network = MLP(5, (8,))
    optimizer = torch.optim.SGD(network.parameters(), lr=lr)
    step = make_fast_dp_step(
        max_grad_norm=0.7,
        noise_multiplier=sigma,
        expected_batch_size=12.5,
        noise=NoiseSource.fresh(),
    )
    return network, optimizer, step


def _flat_grad(network: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in network.parameters()]).clone()


def test_noise_has_std_sigma_times_c():
    network, optimizer, step = _noise_setup(sigma=1.3)
    x, y = _batch(16, 5)
    summed, _, _ = clipped_grad_sum(network, x, y, max_grad_norm=0.7)
    clean = torch.cat([s.reshape(-1) for s in summed])
    noise = torch.stack(
        [_flat_grad_after(step, network, optimizer, x, y) * 12.5 - clean for _ in range(300)]
    )
    assert abs(noise.std().item() / (1.3 * 0.7) - 1) < 0.03
    assert abs(noise.mean().item()) < 0.03 * 1.3 * 0.7
    assert noise[0].ne(noise[1]).all()  # fresh noise every step


def _flat_grad_after(step, network, optimizer, x, y) -> torch.Tensor:
    step(network, optimizer, x, y)
    return _flat_grad(network)


def test_without_noise_the_step_is_the_clipped_mean_over_the_expected_batch():
    network, optimizer, step = _noise_setup(sigma=0.0, lr=0.1)
    x, y = _batch(16, 5)
    summed, _, logits = clipped_grad_sum(network, x, y, max_grad_norm=0.7)
    before = [p.detach().clone() for p in network.parameters()]
    out = step(network, optimizer, x, y)
    torch.testing.assert_close(out, logits)
    assert not out.requires_grad
    for p, start, s in zip(network.parameters(), before, summed, strict=True):
        torch.testing.assert_close(p.grad, s / 12.5, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(p.detach(), start - 0.1 * s / 12.5, rtol=1e-6, atol=1e-7)


def test_empty_batch_is_a_pure_noise_step():
    network, optimizer, step = _noise_setup(sigma=2.0, lr=1.0)
    x, y = torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)
    summed, norms, logits = clipped_grad_sum(network, x, y, max_grad_norm=0.7)
    assert norms.shape == (0,) and logits.shape == (0, 2)
    assert all(s.abs().max() == 0 for s in summed)
    draws = []
    for _ in range(100):
        before = torch.cat([p.detach().reshape(-1) for p in network.parameters()])
        out = step(network, optimizer, x, y)
        assert out.shape == (0, 2)
        after = torch.cat([p.detach().reshape(-1) for p in network.parameters()])
        torch.testing.assert_close(before - after, _flat_grad(network))  # SGD with lr=1 moved
        draws.append(_flat_grad(network) * 12.5)
    assert abs(torch.stack(draws).std().item() / (2.0 * 0.7) - 1) < 0.05


def test_step_survives_zero_grad_and_a_new_network():
    network, optimizer, step = _noise_setup(sigma=0.0)
    x, y = _batch(16, 5)
    step(network, optimizer, x, y)
    optimizer.zero_grad(set_to_none=True)
    step(network, optimizer, x, y)
    summed, _, _ = clipped_grad_sum(network, x, y, max_grad_norm=0.7)
    for p, s in zip(network.parameters(), summed, strict=True):
        torch.testing.assert_close(p.grad, s / 12.5)
    network.load_state_dict(MLP(5, (8,)).state_dict(), assign=True)  # new parameter objects
    step(network, torch.optim.SGD(network.parameters(), lr=0.0), x, y)
    summed, _, _ = clipped_grad_sum(network, x, y, max_grad_norm=0.7)
    for p, s in zip(network.parameters(), summed, strict=True):
        torch.testing.assert_close(p.grad, s / 12.5)
    other = MLP(5, (3,))
    step(other, torch.optim.SGD(other.parameters(), lr=0.0), x, y)
    summed, _, _ = clipped_grad_sum(other, x, y, max_grad_norm=0.7)
    for p, s in zip(other.parameters(), summed, strict=True):
        torch.testing.assert_close(p.grad, s / 12.5)


class _CustomForward(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class _ExtraParameter(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Linear(4, 2))
        self.scale = nn.Parameter(torch.ones(1))


def _frozen() -> nn.Module:
    network = MLP(4, (3,))
    network[0].bias.requires_grad_(False)
    return network


_shared = nn.Linear(4, 4)
UNSUPPORTED = {
    "conv1d": lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(4, 2)),
    "batchnorm": lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)),
    "layernorm": lambda: nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)),
    "softmax-across-features": lambda: nn.Sequential(nn.Linear(4, 8), nn.Softmax(1)),
    "shared-linear": lambda: nn.Sequential(_shared, nn.ReLU(), _shared),
    "custom-forward": lambda: _CustomForward(nn.Linear(4, 2)),
    "extra-parameter": _ExtraParameter,
    "frozen-parameter": _frozen,
    "not-sequential": lambda: nn.Linear(4, 2),
    "no-linear": lambda: nn.Sequential(nn.ReLU()),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_networks_are_refused(name: str):
    network = UNSUPPORTED[name]()
    assert not supports(network)
    step = make_fast_dp_step(
        max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=8, noise=NoiseSource.fresh()
    )
    params = [p for p in network.parameters() if p.requires_grad] or [nn.Parameter(torch.ones(1))]
    x, y = _batch(8, 4)
    with pytest.raises(ValueError, match="does not support"):
        step(network, torch.optim.SGD(params, lr=0.1), x, y)
    with pytest.raises(ValueError, match="does not support"):
        clipped_grad_sum(network, x, y, max_grad_norm=1.0)


def test_supported_networks():
    assert supports(MLP(20, (128, 64)))
    assert supports(MLP(20, (128, 64), dropout=0.2))
    assert supports(nn.Sequential(nn.Dropout(0.1), nn.Sequential(nn.Linear(3, 4), nn.GELU())))
    assert supports(nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_grad_norm=0.0, noise_multiplier=1.0, expected_batch_size=8),
        dict(max_grad_norm=-1.0, noise_multiplier=1.0, expected_batch_size=8),
        dict(max_grad_norm=math.nan, noise_multiplier=1.0, expected_batch_size=8),
        dict(max_grad_norm=1.0, noise_multiplier=-0.1, expected_batch_size=8),
        dict(max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=0),
        dict(max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=-3.0),
    ],
)
def test_bad_settings_raise(kwargs: dict):
    with pytest.raises(ValueError, match="must be"):
        make_fast_dp_step(**kwargs, noise=NoiseSource.fresh())


def test_bad_shapes_and_clip_raise():
    network = MLP(4, (3,))
    x, y = _batch(8, 4)
    with pytest.raises(ValueError, match="max_grad_norm"):
        clipped_grad_sum(network, x, y, max_grad_norm=0.0)
    with pytest.raises(ValueError, match="shape"):
        clipped_grad_sum(network, x.unsqueeze(1), y, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="shape"):
        clipped_grad_sum(network, x, y[:-1], max_grad_norm=1.0)


def test_poisson_batches_include_each_row_with_probability_q():
    torch.manual_seed(0)
    n, q, draws = 50, 0.1, 3000
    counts, sizes = torch.zeros(n), []
    for idx in PoissonBatches(sample_rate=q, steps_per_epoch=draws, noise=NoiseSource.fresh())(n):
        assert idx.dtype == torch.long and (idx.diff() > 0).all()
        assert len(idx) == 0 or (idx.min() >= 0 and idx.max() < n)
        counts[idx] += 1
        sizes.append(len(idx))
    assert len(sizes) == draws
    sd = math.sqrt(draws * q * (1 - q))
    assert ((counts - draws * q).abs() < 5 * sd).all()
    size = torch.tensor(sizes, dtype=torch.float64)
    assert abs(size.mean().item() - n * q) < 0.1
    assert abs(size.var().item() / (n * q * (1 - q)) - 1) < 0.1
    with pytest.raises(ValueError):
        PoissonBatches(sample_rate=0.0, steps_per_epoch=1, noise=NoiseSource.fresh())


def _toy(n: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    w = torch.linspace(-1.5, 1.5, features)
    y = (torch.rand(n, generator=gen) < torch.sigmoid(2 * x @ w)).long()
    return x, y


def test_fit_network_with_the_fast_step_learns_the_toy_problem():
    x, y = _toy(3000, 6, seed=0)
    data = TrainingData(x[:2000], y[:2000], x[2000:], y[2000:])
    q = 64 / 2000

    torch.manual_seed(0)
    network = MLP(6, (16,))
    step = make_fast_dp_step(
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        expected_batch_size=q * 2000,
        noise=NoiseSource.fresh(),
    )
    state = fit_network(
        network,
        torch.optim.Adam(network.parameters(), lr=5e-3),
        data,
        epochs=5,
        patience=5,
        seed=0,
        batches=PoissonBatches(
            sample_rate=q, steps_per_epoch=round(1 / q), noise=NoiseSource.fresh()
        ),
        step=step,
    )
    assert len(state.history) >= 1
    score = auroc(data.y_val.numpy(), positive_margin(network, data.x_val).numpy())
    assert score > 0.75
