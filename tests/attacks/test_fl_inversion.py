"""fl_inversion against a federated model: batch size 1 leaks, DP pushes it back to the prior."""

from __future__ import annotations

from medpriv.attacks.fl_inversion import fl_inversion, network_of
from medpriv.config import FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset


def test_single_records_leak_and_dp_noise_hides_them():
    splits = split_by_unit(make_toy_dataset(600), seed=0)
    trainer = get_trainer("fedavg", federated=FederatedConfig(rounds=3))
    model = trainer.fit(splits=splits, config=TrainConfig(hidden=(16,)), seed=0)
    assert network_of(model) is not None
    block = fl_inversion(model, splits, seed=0, trials=3)
    plain, dp = block["fedsgd"]["1"], block["dp"]["1"]
    assert plain["accuracy"] >= plain["baseline_accuracy"] + 0.2
    assert dp["accuracy"] <= plain["accuracy"] - 0.2
    assert dp["accuracy"] <= dp["baseline_accuracy"] + 0.15
    assert block["fedavg"]["1"]["accuracy"] >= block["fedavg"]["1"]["baseline_accuracy"] + 0.1
    assert set(block["fedsgd"]) == {"1", "4", "8", "16", "32"} and block["secagg"]["clients"] == 4


def test_non_federated_models_are_left_out():
    splits = split_by_unit(make_toy_dataset(300), seed=0)
    model = get_trainer("logreg").fit(splits=splits, config=TrainConfig(), seed=0)
    assert fl_inversion(model, splits) is None


def test_a_fedavg_dp_servers_every_view_is_noised(monkeypatch):
    """fedavg-dp clients only send DP-SGD updates: no view the server simulates is noiseless."""
    from medpriv.attacks import fl_inversion as module

    splits = split_by_unit(make_toy_dataset(600), seed=0)
    trainer = get_trainer("fedavg-dp", federated=FederatedConfig(rounds=3))
    model = trainer.fit(
        splits=splits,
        config=TrainConfig(hidden=(16,)),
        privacy=PrivacyConfig(target_epsilon=3.0),
        seed=0,
    )
    sigmas: list[float] = []
    real_dp_gradient, real_update = module._dp_gradient, module._fedavg_update

    def spied_dp_gradient(*args, sigma, **kwargs):
        sigmas.append(sigma)
        return real_dp_gradient(*args, sigma=sigma, **kwargs)

    def checked_update(*args, dp=None, **kwargs):
        assert dp is not None, "a fedavg-dp client's local update simulated without noise"
        return real_update(*args, dp=dp, **kwargs)

    def no_plain_gradient(*args, **kwargs):
        raise AssertionError("a fedavg-dp client's gradient simulated without noise")

    monkeypatch.setattr(module, "_dp_gradient", spied_dp_gradient)
    monkeypatch.setattr(module, "_fedavg_update", checked_update)
    monkeypatch.setattr(module, "_gradient", no_plain_gradient)
    block = fl_inversion(model, splits, seed=0, trials=1, steps=20, restarts=1)
    assert block["protocol"]["client_updates"].startswith("DP-SGD")
    assert block["dp"]["noise_multiplier"] == model.params["noise_multiplier"]
    assert sigmas and set(sigmas) == {model.params["noise_multiplier"]}
    assert set(block) >= {"fedsgd", "fedavg", "dp", "secagg"}


def test_the_victims_dp_view_is_simulated_through_the_privacy_core():
    """The attacker's simulation of a DP client: the core's clipped, noised sum from a replayable
    source (same seed, same view), and no noise drawn by the attack module itself."""
    import inspect
    import re

    import torch

    from medpriv.attacks import fl_inversion as module
    from medpriv.models import MLP

    torch.manual_seed(0)
    network = MLP(4, (8,))
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    first = module._dp_gradient(network, x, y, sigma=1.0, clip=1.0, seed=5)
    again = module._dp_gradient(network, x, y, sigma=1.0, clip=1.0, seed=5)
    other = module._dp_gradient(network, x, y, sigma=1.0, clip=1.0, seed=6)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not all((a == b).all() for a, b in zip(first, other, strict=True))
    quiet = module._dp_gradient(network, x, y, sigma=0.0, clip=1e6, seed=5)
    plain = module._gradient(network, x, y)
    assert all(abs(a - b).max() < 1e-5 for a, b in zip(quiet, plain, strict=True))
    source = inspect.getsource(module)
    assert "noisy_clipped_sum" in source
    assert not re.search(r"torch\.normal\(|\.normal_\(|randn\(", source)
