"""Vectorized shadow models: equal to K separate MLPs step by step, and they learn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.special import expit
from torch.nn import functional as F

from medpriv.attacks.shadow import (
    ShadowRecipe,
    StackedMLP,
    _clipped_grad_sums,
    _epoch_batches,
    _make_pool,
    _optimizer,
    _poisson_batch,
    _step_nonprivate,
    train_shadows,
)
from medpriv.metrics import auroc
from medpriv.models import MLP, positive_margin
from medpriv.privacy.clipping import clipped_grad_sum

D = 5
PLAIN = ShadowRecipe(hidden=(16, 8), epochs=15, batch_size=32, lr=1e-2, optimizer="adam")
PRIVATE = ShadowRecipe(
    hidden=(16, 8),
    epochs=15,
    batch_size=0,
    lr=0.5,
    optimizer="sgd",
    prior_init=True,
    noise_multiplier=0.5,
    max_grad_norm=1.0,
    sample_rate=0.25,
    steps_per_epoch=4,
)


def toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with a strong linear-logistic signal in the first two columns."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (rng.random(n) < expit(3 * x[:, 0] - 2 * x[:, 1])).astype(np.int64)
    return x, y


def half_masks(k: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((k, n)) < 0.5


def networks(k: int, *, dropout: float = 0.0) -> list[MLP]:
    nets = []
    for i in range(k):
        torch.manual_seed(100 + i)
        nets.append(MLP(D, (16, 8), dropout=dropout))
    return nets


def batch(k: int, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(k, b, D, generator=gen) * 3
    return x, torch.randint(0, 2, (k, b), generator=gen)


def test_from_networks_matches_each_network() -> None:
    nets = networks(3, dropout=0.2)
    stacked = StackedMLP.from_networks(nets)
    x = torch.randn(50, D)
    margins = stacked.margins(x)
    assert margins.shape == (3, 50) and margins.dtype == np.float64
    for k, net in enumerate(nets):
        np.testing.assert_allclose(margins[k], positive_margin(net, x).numpy(), atol=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_nonprivate_step_equals_separate_models(optimizer: str) -> None:
    nets = networks(3)
    stacked = StackedMLP.from_networks(nets)
    recipe = dataclasses.replace(PLAIN, optimizer=optimizer, lr=0.05, weight_decay=1e-3)
    stacked_opt = _optimizer(stacked, recipe)
    x, y = batch(3, 12)
    real = torch.ones(3, 12, dtype=torch.bool)
    real[1, 7:] = False  # model 1 has a padded batch
    opts = [
        torch.optim.Adam(n.parameters(), lr=0.05, weight_decay=1e-3)
        if optimizer == "adam"
        else torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        for n in nets
    ]
    for _ in range(2):  # the second step exercises the optimizers' state
        _step_nonprivate(stacked, stacked_opt, x, y, real)
        for k, (net, opt) in enumerate(zip(nets, opts, strict=True)):
            opt.zero_grad()
            F.cross_entropy(net(x[k][real[k]]), y[k][real[k]]).backward()
            opt.step()
    for k, net in enumerate(nets):
        for stacked_p, p in zip(stacked.parameters, net.parameters(), strict=True):
            torch.testing.assert_close(stacked_p[k], p.detach(), atol=1e-5, rtol=0)


def test_clipped_grad_sums_match_dp_fast_and_ignore_padding() -> None:
    nets = networks(3)
    stacked = StackedMLP.from_networks(nets)
    x, y = batch(3, 10)
    sums = _clipped_grad_sums(stacked, x, y, torch.ones(3, 10), max_grad_norm=0.5)
    for k, net in enumerate(nets):
        expected, _, _ = clipped_grad_sum(net, x[k], y[k], max_grad_norm=0.5)
        for got, want in zip(sums, expected, strict=True):
            torch.testing.assert_close(got[k], want, atol=1e-5, rtol=0)
    x_pad, y_pad = batch(3, 4, seed=1)
    padded = _clipped_grad_sums(
        stacked,
        torch.cat([x, x_pad * 10], 1),
        torch.cat([y, y_pad], 1),
        torch.cat([torch.ones(3, 10), torch.zeros(3, 4)], 1),
        max_grad_norm=0.5,
    )
    for got, want in zip(padded, sums, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("recipe", [PLAIN, PRIVATE], ids=["nonprivate", "dp"])
def test_rows_outside_every_in_set_are_never_read(recipe: ShadowRecipe) -> None:
    x, y = toy(300, 0)
    in_mask = half_masks(3, 300)
    in_mask[:, 200:] = False
    x[200:] = np.nan
    fast = dataclasses.replace(recipe, epochs=3)
    stacked = train_shadows(x, y, in_mask, x_val=x[:50], y_val=y[:50], recipe=fast, seed=0)
    assert np.isfinite(stacked.margins(x[:200])).all()
    assert all(torch.isfinite(p).all() for p in stacked.parameters)


def test_epoch_batches_permute_each_models_in_rows() -> None:
    _, y = toy(40, 0)
    in_mask = half_masks(3, 40)
    pool = _make_pool(np.zeros((40, D)), y, in_mask)
    batches = _epoch_batches(pool, 6, torch.Generator().manual_seed(0))
    assert len(batches) == -(-int(in_mask.sum(1).max()) // 6)
    for k in range(3):
        seen = torch.cat([idx[k][real[k]] for idx, real in batches])
        assert sorted(seen.tolist()) == np.flatnonzero(in_mask[k]).tolist()


def test_poisson_batches_sample_in_rows_at_the_rate() -> None:
    _, y = toy(400, 0)
    in_mask = half_masks(2, 400)
    pool = _make_pool(np.zeros((400, D)), y, in_mask)
    gen = torch.Generator().manual_seed(0)
    sizes = []
    for _ in range(200):
        idx, real = _poisson_batch(pool, 0.1, gen)
        for k in range(2):
            chosen = idx[k][real[k]]
            assert in_mask[k, chosen.numpy()].all() and len(chosen.unique()) == len(chosen)
        sizes.append(real.sum(1).numpy())
    expected = 0.1 * in_mask.sum(1)
    np.testing.assert_allclose(np.mean(sizes, axis=0), expected, rtol=0.1)


def test_shadows_learn() -> None:
    x, y = toy(1200, 0)
    x_val, y_val = toy(400, 1)
    in_mask = half_masks(4, 1200)
    for recipe, floor in ((PLAIN, 0.75), (PRIVATE, 0.7)):
        stacked = train_shadows(x, y, in_mask, x_val=x_val, y_val=y_val, recipe=recipe, seed=0)
        for margin in stacked.margins(x_val):
            assert auroc(y_val, margin) > floor


def test_same_seed_same_shadows() -> None:
    x, y = toy(200, 0)
    in_mask = half_masks(2, 200)
    recipe = dataclasses.replace(PLAIN, epochs=2, dropout=0.2)

    def margins(seed: int) -> np.ndarray:
        stacked = train_shadows(x, y, in_mask, x_val=x, y_val=y, recipe=recipe, seed=seed)
        return stacked.margins(x)

    np.testing.assert_array_equal(margins(3), margins(3))
    assert not np.allclose(margins(3), margins(4))


def test_calibration_matches_platt_targets() -> None:
    x, y = toy(400, 0)
    x_val, y_val = toy(200, 1)
    recipe = dataclasses.replace(PRIVATE, epochs=3, calibrate=True)
    stacked = train_shadows(
        x, y, half_masks(3, 400), x_val=x_val, y_val=y_val, recipe=recipe, seed=0
    )
    assert stacked.platt_scale is not None and stacked.platt_shift is not None
    assert torch.isfinite(stacked.platt_scale).all() and torch.isfinite(stacked.platt_shift).all()
    n_pos, n_neg = int(y_val.sum()), int((1 - y_val).sum())
    target = np.where(y_val == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)).mean()
    for margin in stacked.margins(x_val):
        assert abs(expit(margin).mean() - target) < 1e-4


def test_incomplete_private_recipe_is_rejected() -> None:
    x, y = toy(50, 0)
    bad = dataclasses.replace(PRIVATE, sample_rate=None)
    with pytest.raises(ValueError, match="sample_rate"):
        train_shadows(x, y, half_masks(2, 50), x_val=x, y_val=y, recipe=bad, seed=0)


def test_poisson_rate_one_takes_every_in_row() -> None:
    _, y = toy(30, 0)
    in_mask = half_masks(2, 30)
    pool = _make_pool(np.zeros((30, D)), y, in_mask)
    idx, real = _poisson_batch(pool, 1.0, torch.Generator().manual_seed(0))
    for k in range(2):
        assert sorted(idx[k][real[k]].tolist()) == np.flatnonzero(in_mask[k]).tolist()
