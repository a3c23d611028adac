"""Clipping and noise on the client's layers of a split network: without noise or clipping it is
the plain split step; per-sample norms are the true per-sample gradient norms; the noise comes
from the privacy core's source; no ε is claimed (the server's layers see raw activations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from medpriv.config import PrivacyConfig, SplitLearningConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError, PrivacyError
from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.base import get_trainer
from medpriv.train.split.client import RemotePart, SplitNetwork, cut_mlp, part_widths, split_step
from medpriv.train.split.private import _passes, make_private_split_step
from medpriv.train.split.server import make_optimizer
from medpriv.train.split.transport import InProcessTransport
from tests.conftest import make_toy_dataset

SPEC = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}


def _network(ushaped: bool) -> SplitNetwork:
    torch.manual_seed(0)
    bottom, server, head = cut_mlp(MLP(5, (6, 4)), 1, ushaped=ushaped)
    remote = RemotePart(InProcessTransport())
    remote.open(
        "ushaped" if ushaped else "vanilla",
        part_widths(server),
        [p.detach().numpy().copy() for p in server.parameters()],
        SPEC,
    )
    return SplitNetwork(bottom, remote, head)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(12, 5, generator=g), torch.randint(0, 2, (12,), generator=g)


@pytest.mark.parametrize("ushaped", [False, True])
def test_without_noise_or_clipping_the_private_step_is_the_plain_step(ushaped):
    x, y = _batch()
    plain, private = _network(ushaped), _network(ushaped)
    plain_opt = make_optimizer(list(plain.local_parameters()), SPEC)
    private_opt = make_optimizer(list(private.local_parameters()), SPEC)
    split_step(plain, plain_opt, x, y)
    step = make_private_split_step(
        max_grad_norm=1e9,
        noise_multiplier=0.0,
        expected_batch_size=len(x),
        noise=NoiseSource.fresh(),
    )
    step(private, private_opt, x, y)
    for a, b in zip(plain.local_parameters(), private.local_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_per_sample_norms_are_the_per_sample_gradient_norms():
    x, y = _batch()
    network = _network(ushaped=True)
    weights, _, _ = network.remote.state()  # before the pass: the server steps in it
    passes, _ = _passes(network, x, y)
    ours = torch.linalg.vector_norm(torch.stack([p.norms() for p in passes]), dim=0)
    full = torch.nn.Sequential(
        *network.bottom, torch.nn.Linear(6, 4), torch.nn.ReLU(), network.head
    )
    with torch.no_grad():
        full[2].weight.copy_(torch.from_numpy(weights[0]))
        full[2].bias.copy_(torch.from_numpy(weights[1]))
    client = [*network.bottom.parameters(), *network.head.parameters()]
    for i in range(len(x)):
        grads = torch.autograd.grad(F.cross_entropy(full(x[i : i + 1]), y[i : i + 1]), client)
        expected = torch.sqrt(sum((g**2).sum() for g in grads))
        assert float(ours[i]) == pytest.approx(float(expected), rel=1e-4)


def test_the_noise_comes_from_the_source_it_is_given():
    x, y = _batch()
    updates = []
    for source in (NoiseSource.reproducible(3), NoiseSource.reproducible(3), NoiseSource.fresh()):
        network = _network(ushaped=True)
        optimizer = make_optimizer(list(network.local_parameters()), SPEC)
        make_private_split_step(
            max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=len(x), noise=source
        )(network, optimizer, x, y)
        updates.append(torch.cat([p.detach().reshape(-1) for p in network.local_parameters()]))
    assert torch.equal(updates[0], updates[1])  # the same replayable source: the same noise
    assert not torch.equal(updates[0], updates[2])  # a fresh source: noise nobody can replay


def test_client_dp_claims_no_epsilon_for_the_client_layers_or_the_model():
    splits = split_by_unit(make_toy_dataset(800), seed=0)
    trainer = get_trainer("split-ushaped", split_learning=SplitLearningConfig(client_dp=True))
    assert trainer.private
    model = trainer.fit(
        splits=splits,
        config=TrainConfig(epochs=4, hidden=(16, 8)),
        privacy=PrivacyConfig(target_epsilon=3.0),
        seed=0,
    )
    client = model.params["client_layers_privacy"]
    assert client["epsilon"] is None and client["noise_multiplier"] > 0
    assert client["noise_calibrated_for_epsilon"] == 3.0
    assert "no ε is claimed" in client["why_no_epsilon"]
    assert model.privacy.epsilon is None
    assert "no ε is claimed" in model.privacy.statement()
    assert all("epsilon" not in r and "train_loss" not in r for r in model.history)
    assert np.isfinite(model.margin(splits.test)).all()


def test_client_dp_refuses_what_it_cannot_account_for():
    splits = split_by_unit(make_toy_dataset(300), seed=0)
    config = TrainConfig(epochs=1, hidden=(8, 4))
    with pytest.raises(PrivacyError, match="target"):
        get_trainer("split", split_learning=SplitLearningConfig(client_dp=True)).fit(
            splits=splits, config=config, privacy=None, seed=0
        )
    with pytest.raises(ConfigError, match="nopeek"):
        get_trainer("split", split_learning=SplitLearningConfig(client_dp=True, nopeek=1.0)).fit(
            splits=splits, config=config, privacy=PrivacyConfig(target_epsilon=1.0), seed=0
        )
    with pytest.raises(ConfigError, match="one client"):
        get_trainer("splitfed", split_learning=SplitLearningConfig(client_dp=True)).fit(
            splits=splits, config=config, privacy=PrivacyConfig(target_epsilon=1.0), seed=0
        )
