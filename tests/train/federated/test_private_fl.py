"""Federated DP: DP-SGD inside clients that own their noise and their privacy policy (sample
level), and DP-FedAvg at the server (client level). Each test fails if its claim is false."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medpriv.config import FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import PrivacyError
from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.base import get_trainer
from medpriv.train.federated.client import ClientUpdate, LocalClient, LocalRecipe, train_client
from medpriv.train.federated.policy import (
    ClientPolicy,
    ClientRefusal,
    PrivacyLedger,
)
from medpriv.train.federated.private import (
    CDP_MAX_DEFAULT_DELTA,
    ONE_SITE_CAVEAT,
    ClientLevelAccountant,
    SampleLevelAccountant,
    unit_site_groups,
)
from medpriv.train.federated.strategy import DPFedAvg, FedAdam
from medpriv.train.federated.weights import get_weights
from tests.conftest import make_toy_dataset

RECIPE = LocalRecipe(hidden=(8,), epochs=3, batch_size=1000, lr=0.1, optimizer="sgd")
DP_RECIPE = dataclasses.replace(
    RECIPE, batch_size=40, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0
)


def _data(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _start() -> list[np.ndarray]:
    torch.manual_seed(0)
    return get_weights(MLP(4, (8,)))


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_dp_client_without_noise_or_clipping_is_full_batch_sgd():
    x, y = _data()
    plain = train_client(_start(), x, y, recipe=RECIPE, seed=0)
    private = dataclasses.replace(RECIPE, noise_multiplier=0.0, max_grad_norm=1e6)
    dp = train_client(_start(), x, y, recipe=private, seed=0)
    assert dp.steps == plain.steps == 3 and dp.sample_rate == 1.0 and dp.train_loss is None
    for a, b in zip(dp.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_dp_clients_draw_masks_and_noise_from_their_own_source_never_the_seed():
    x, y = _data(400)
    update = train_client(_start(), x, y, recipe=DP_RECIPE, seed=0)
    assert update.sample_rate == pytest.approx(0.1) and update.steps == 10
    assert update.noise == "csprng"
    # The same server seed twice: fresh noise, different weights.
    again = train_client(_start(), x, y, recipe=DP_RECIPE, seed=0)
    assert not _same(update.weights, again.weights)
    # Only a replayable source (the client's own choice, or an attacker's) replays them.
    first = train_client(
        _start(), x, y, recipe=DP_RECIPE, seed=0, noise=NoiseSource.reproducible(7)
    )
    second = train_client(
        _start(), x, y, recipe=DP_RECIPE, seed=99, noise=NoiseSource.reproducible(7)
    )
    assert _same(first.weights, second.weights) and first.noise == "reproducible"


def test_dp_fedavg_bounds_one_clients_influence_and_draws_fresh_server_noise():
    start = [np.zeros(3, np.float32)]
    huge = ClientUpdate([np.full(3, 1e6, np.float32)], n_examples=10, train_loss=None, steps=1)
    small = ClientUpdate([np.full(3, 0.01, np.float32)], n_examples=10, train_loss=None, steps=1)

    def strategy(sigma: float, noise: NoiseSource) -> DPFedAvg:
        return DPFedAvg(clip=1.0, noise_multiplier=sigma, expected_clients=2.0, noise=noise)

    with_huge = strategy(0.0, NoiseSource.fresh()).aggregate(start, [huge, small])[0]
    without = strategy(0.0, NoiseSource.fresh()).aggregate(start, [small])[0]
    assert np.linalg.norm(with_huge - without) <= 1.0 / 2.0 + 1e-6
    first = strategy(1.0, NoiseSource.fresh()).aggregate(start, [small])[0]
    second = strategy(1.0, NoiseSource.fresh()).aggregate(start, [small])[0]
    assert not np.allclose(first, without) and not np.allclose(first, second)
    assert "noise" not in strategy(1.0, NoiseSource.fresh()).state()  # nothing to replay


def test_client_level_dp_wraps_any_server_strategy():
    """The clipped, noised mean is a DP release; FedAdam's step towards it is post-processing,
    so DP-FedAvg hands it to the inner strategy (as Flower's server-side DP wrapper does)."""
    start = [np.zeros(3, np.float32)]
    update = ClientUpdate([np.full(3, 0.3, np.float32)], n_examples=10, train_loss=None, steps=1)
    wrapped = DPFedAvg(
        clip=1.0,
        noise_multiplier=0.0,
        expected_clients=1.0,
        noise=NoiseSource.fresh(),
        inner=FedAdam(server_lr=0.1),
    )
    assert wrapped.name == "dp-fedadam"
    expected = FedAdam(server_lr=0.1).from_mean(start, [np.full(3, 0.3, np.float32)])
    np.testing.assert_allclose(wrapped.aggregate(start, [update])[0], expected[0], rtol=1e-6)
    saved = wrapped.state()
    assert "rounds_done" in saved and any(key.startswith("m") for key in saved)
    again = DPFedAvg(
        clip=1.0,
        noise_multiplier=0.0,
        expected_clients=1.0,
        noise=NoiseSource.fresh(),
        inner=FedAdam(server_lr=0.1),
    )
    again.load_state(saved)
    np.testing.assert_array_equal(again.inner._m[0], wrapped.inner._m[0])
    model = get_trainer(
        "fedavg-cdp",
        federated=FederatedConfig(rounds=2, partition="iid:4", strategy="fedadam", server_lr=0.05),
    ).fit(
        splits=split_by_unit(make_toy_dataset(600), seed=0),
        config=TrainConfig(hidden=(8,)),
        privacy=PrivacyConfig(target_epsilon=8.0),
        seed=0,
    )
    assert model.params["strategy"] == "dp-fedadam" and model.privacy.level == "client"


# --- a client owns its privacy policy ---------------------------------------------------------


def _client(policy: ClientPolicy, n: int = 400) -> LocalClient:
    x, y = _data(n)
    return LocalClient("north", x, y, policy=policy)


def test_a_client_refuses_noise_below_its_minimum_and_clipping_above_its_maximum():
    client = _client(ClientPolicy(max_epsilon=50.0, min_noise_multiplier=1.5, max_grad_norm=0.5))
    with pytest.raises(ClientRefusal) as refused:
        client.fit(_start(), DP_RECIPE, round_number=1, seed=0)
    assert "σ = 1 is below this client's minimum of 1.5" in str(refused.value)
    assert "C = 1 is above this client's maximum of 0.5" in str(refused.value)
    assert client.ledger.entries == []  # nothing was spent
    # σ = 0 (no noise at all) is refused by any budget: it would spend ε = ∞.
    silent = dataclasses.replace(DP_RECIPE, noise_multiplier=0.0)
    with pytest.raises(ClientRefusal, match="ε = inf"):
        _client(ClientPolicy(max_epsilon=50.0)).fit(_start(), silent, round_number=1, seed=0)
    # Within the policy it trains, charges its ledger and reports its own ε.
    ok = _client(ClientPolicy(max_epsilon=50.0, min_noise_multiplier=1.0, max_grad_norm=1.0))
    update = ok.fit(_start(), DP_RECIPE, round_number=1, seed=0)
    assert ok.ledger.history() == ((1.0, 0.1, 10),)
    assert 0 < update.epsilon <= 50.0 and update.delta == pytest.approx(1e-4)


def test_a_client_refuses_a_plan_above_its_budget_and_never_exceeds_it():
    policy = ClientPolicy(max_epsilon=4.0)
    client = _client(policy)
    with pytest.raises(ClientRefusal, match="over this client's budget of ε = 4"):
        client.fit(_start(), DP_RECIPE, round_number=1, seed=0, rounds_left=200)
    assert client.ledger.entries == []
    # A coordinator that announces one round at a time still cannot spend past the budget.
    rounds = 0
    with pytest.raises(ClientRefusal, match="over this client's budget"):
        for rounds in range(1, 200):
            client.fit(_start(), DP_RECIPE, round_number=rounds, seed=0, rounds_left=1)
    spent = client.ledger.epsilon(accountant="prv", delta=policy.delta_for(400))
    assert 2 < rounds < 199 and spent <= 4.0
    assert client.ledger.steps() == 10 * (rounds - 1)


def test_the_ledger_composes_runs_and_survives_serialisation():
    ledger = PrivacyLedger()
    ledger.charge(run="a", noise_multiplier=1.0, sample_rate=0.1, steps=10)
    ledger.charge(run="b", noise_multiplier=1.0, sample_rate=0.1, steps=10)
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again.history() == ((1.0, 0.1, 20),) and again.history("a") == ((1.0, 0.1, 10),)
    both = again.epsilon(accountant="prv", delta=1e-5)
    assert both > again.epsilon(accountant="prv", delta=1e-5, run="a") > 0
    with pytest.raises(PrivacyError, match="malformed"):
        PrivacyLedger.from_json('[["a", 1.0]]')


def _fit(method: str, epsilon: float | None = None, privacy=None, trainer=None, **federated):
    splits = split_by_unit(make_toy_dataset(1000), seed=0)
    trainer = trainer or get_trainer(method, federated=FederatedConfig(**federated))
    model = trainer.fit(
        splits=splits,
        config=TrainConfig(hidden=(16,)),
        privacy=privacy or PrivacyConfig(target_epsilon=epsilon),
        seed=0,
    )
    return splits, model


def test_in_process_clients_refuse_a_plan_over_their_budget_and_are_recorded_as_dropped():
    _, model = _fit("fedavg-dp", privacy=PrivacyConfig(target_epsilon=3.0, budget=1.0), rounds=2)
    for record in model.history:
        assert record["clients"] == 0 and set(record["dropped"]) == {"north", "south"}
        assert all("over this client's budget of ε = 1" in r for r in record["dropped"].values())
        assert all(r.startswith("refused: ") for r in record["dropped"].values())
    assert model.privacy.epsilon == 0.0  # nothing was trained, nothing spent
    assert any("4 client round(s) were refused" in c for c in model.privacy.caveats)


def test_fedavg_dp_reports_each_patients_composed_epsilon_from_the_clients_own_ledgers():
    splits, model = _fit("fedavg-dp", 3.0, rounds=4)
    spent = model.privacy
    assert 2.5 < spent.epsilon <= 3.0 and spent.unit == "patient" and spent.level == "sample"
    assert spent.sampling == "poisson" and spent.delta < 1 / splits.train.n_units
    assert spent.noise == "csprng" and spent.guaranteed
    assert spent.epsilon == pytest.approx(max(model.params["client_epsilon"].values()))
    epsilons = [r["epsilon"] for r in model.history]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(spent.epsilon)
    assert all(v is None for r in model.history for v in r["client_train_loss"].values())
    reported = model.history[-1]["client_privacy"]
    assert {r["epsilon"] for r in reported.values()} == set(model.params["client_epsilon"].values())
    statement = spent.statement()
    assert "every patient's records are at one client" in statement
    assert any("number of training patients" in p for p in spent.public)
    assert any("validation patients" in u for u in spent.unprotected) and spent.trusts


def test_resuming_fedavg_dp_restores_the_clients_ledgers(tmp_path):
    splits = split_by_unit(make_toy_dataset(600), seed=0)
    config, privacy = TrainConfig(hidden=(8,)), PrivacyConfig(target_epsilon=3.0)

    def fit(rounds: int, **kwargs):
        trainer = get_trainer("fedavg-dp", federated=FederatedConfig(rounds=rounds))
        return trainer.fit(splits=splits, config=config, privacy=privacy, seed=0, **kwargs)

    def stop_after_two(round_number: int, record: dict) -> None:
        if round_number == 2:
            raise KeyboardInterrupt  # the run is cut off after its second round

    whole = fit(4)
    with pytest.raises(KeyboardInterrupt):
        fit(4, checkpoint=tmp_path / "fl.pt", on_epoch=stop_after_two)
    resumed = fit(4, checkpoint=tmp_path / "fl.pt", resume=True)
    assert [r["round"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.privacy.epsilon == pytest.approx(whole.privacy.epsilon)
    assert resumed.privacy.steps == whole.privacy.steps


def test_a_unit_at_several_sites_composes_their_epsilons():
    sizes = {"a": 400, "b": 400}
    recipe = dataclasses.replace(RECIPE, batch_size=40, epochs=1)
    ledgers = {"a": PrivacyLedger(), "b": PrivacyLedger()}
    for ledger in ledgers.values():
        ledger.charge(run="in-process", noise_multiplier=1.0, sample_rate=0.1, steps=30)
    privacy = PrivacyConfig(noise_multiplier=1.0)
    shared = unit_site_groups({"a": np.array([1, 2, 3]), "b": np.array([3, 4])})
    assert shared == {frozenset("a"): 2, frozenset("b"): 1, frozenset("ab"): 1}

    def accountant(groups):
        return SampleLevelAccountant(
            sizes=sizes,
            recipe=recipe,
            rounds=3,
            privacy=privacy,
            n_units=1000,
            ledgers=ledgers,
            unit_sites=groups,
        )

    alone = accountant({frozenset("a"): 2, frozenset("b"): 2}).spent([])
    composed = accountant(shared).spent([])
    one_site = ledgers["a"].epsilon(accountant="prv", delta=1e-4)
    assert alone.epsilon == pytest.approx(one_site)
    assert composed.epsilon > 1.3 * one_site  # the shared patient spent both sites' ε
    assert composed.steps == 60 and composed.sample_rate is None
    assert "1 patients have records at several clients" in composed.statement()
    # In a deployment nothing can check this: the statement names the assumption.
    deployed = SampleLevelAccountant(
        sizes=sizes, recipe=recipe, rounds=3, privacy=privacy, n_units=1000
    )
    deployed.after_round(
        {
            "client_sizes": sizes,
            "client_privacy": {
                "a": {"epsilon": 0.7, "delta": 1e-4, "noise": "csprng"},
                "b": {"epsilon": 0.9, "delta": 1e-5, "noise": "csprng"},
            },
        }
    )
    report = deployed.spent([])
    assert report.epsilon == 0.9 and report.delta == 1e-4  # the largest of each
    assert ONE_SITE_CAVEAT in report.caveats
    assert any("report of the ε" in t for t in report.trusts)


def test_same_seed_fedavg_dp_runs_differ_while_fedavg_runs_are_identical():
    splits = split_by_unit(make_toy_dataset(600), seed=0)

    def margins(method: str, privacy: PrivacyConfig | None = None) -> np.ndarray:
        trainer = get_trainer(method, federated=FederatedConfig(rounds=2))
        model = trainer.fit(splits=splits, config=TrainConfig(hidden=(8,)), privacy=privacy, seed=3)
        return model.margin(splits.test)

    assert np.array_equal(margins("fedavg"), margins("fedavg"))
    dp = PrivacyConfig(target_epsilon=3.0)
    assert not np.array_equal(margins("fedavg-dp", dp), margins("fedavg-dp", dp))
    replay = PrivacyConfig(target_epsilon=3.0, reproducible_noise=True)
    assert np.array_equal(margins("fedavg-dp", replay), margins("fedavg-dp", replay))


def test_shadow_copies_replay_their_noise_and_skip_only_the_per_round_epsilon():
    privacy = PrivacyConfig(target_epsilon=3.0, reproducible_noise=True)
    splits, model = _fit("fedavg-dp", privacy=privacy, rounds=4)
    assert model.privacy.noise == "reproducible" and not model.privacy.guaranteed
    trainer = get_trainer("fedavg-dp", federated=FederatedConfig(rounds=4)).for_shadows()
    shadow = trainer.fit(
        splits=splits,
        config=TrainConfig(hidden=(16,)),
        privacy=PrivacyConfig(target_epsilon=3.0),  # the shadow replays its noise regardless
        seed=0,
    )
    assert all("epsilon" not in r and "client_privacy" not in r for r in shadow.history)
    assert shadow.privacy.epsilon == model.privacy.epsilon
    assert np.array_equal(shadow.margin(splits.test), model.margin(splits.test))


# --- client-level DP --------------------------------------------------------------------------


def _cdp_accountant(noise: NoiseSource, **changes) -> ClientLevelAccountant:
    values = dict(
        n_clients=6,
        fraction=0.5,
        rounds=10,
        privacy=PrivacyConfig(noise_multiplier=1.0),
        n_units=1000,
        noise=noise,
    )
    return ClientLevelAccountant(**{**values, **changes})


def test_client_level_dp_claims_sampling_only_for_hidden_csprng_participation():
    assert _cdp_accountant(NoiseSource.fresh()).sample_rate == 0.5
    published = _cdp_accountant(NoiseSource.fresh(), publish_participants=True)
    replayable = _cdp_accountant(NoiseSource.reproducible(0))
    everyone = _cdp_accountant(NoiseSource.fresh(), fraction=1.0)
    for accountant in (published, replayable, everyone):
        assert accountant.sample_rate == 1.0 and not accountant.hidden
    for accountant in (published, replayable):
        accountant.rounds_done = 10
        assert "(q = 1)" in accountant.spent([]).statement()
    # An attacker's shadow copy replays its draws but imitates the target's accounting.
    assert _cdp_accountant(NoiseSource.reproducible(0), simulation=True).sample_rate == 0.5
    record = {"round": 1, "clients": 2, "client_sizes": {"a": 5}, "client_train_loss": {"a": 1.0}}
    assert _cdp_accountant(NoiseSource.fresh()).redact(record)["clients"] is None
    assert published.redact(record)["client_sizes"] == {"a": 5}
    assert "client_train_loss" not in published.redact(record)


def test_client_level_dp_defaults_delta_to_at_most_1e_5_whatever_the_number_of_sites():
    for n_clients, n_units in ((5, 300), (3, 50_000)):
        accountant = _cdp_accountant(NoiseSource.fresh(), n_clients=n_clients, n_units=n_units)
        assert accountant.delta <= CDP_MAX_DEFAULT_DELTA and accountant.delta < 1 / n_units
    with pytest.raises(PrivacyError, match="not below 1/n"):
        _cdp_accountant(
            NoiseSource.fresh(), privacy=PrivacyConfig(noise_multiplier=1.0, delta=0.01)
        )


def test_fedavg_cdp_hides_participation_and_accounts_q_fraction():
    _, model = _fit("fedavg-cdp", 5.0, rounds=6, fraction=0.5, partition="iid:6")
    spent = model.privacy
    assert 0 < spent.epsilon <= 5.0 and spent.unit == "site" and spent.level == "client"
    assert spent.delta <= 1e-5 and spent.sample_rate == 0.5 and spent.steps == 6
    assert spent.noise == "csprng" and model.params["participation"] == "withheld"
    for record in model.history:  # nothing about who took part, no per-site loss
        assert "client_train_loss" not in record
        for key in ("clients", "client_sizes", "dropped", "bytes_up", "bytes_down"):
            assert record[key] is None
    assert model.params["client_sampling"] == "poisson" and model.cost.bytes_communicated > 0
    assert any("raw model update" in t for t in spent.trusts)
    assert any("record count" in u for u in spent.unprotected)
    assert any("never published" in c for c in spent.caveats)


def test_fedavg_cdp_with_published_participants_accounts_q_1():
    trainer = get_trainer(
        "fedavg-cdp",
        federated=FederatedConfig(rounds=6, fraction=0.5, partition="iid:6"),
        publish_participants=True,
    )
    _, model = _fit("fedavg-cdp", 5.0, trainer=trainer)
    spent = model.privacy
    assert spent.sample_rate == 1.0 and 0 < spent.epsilon <= 5.0
    assert model.params["participation"] == "published"
    counts = {r["clients"] for r in model.history}
    assert len(counts) > 1  # Poisson participation, published round by round
    assert all("client_train_loss" not in r for r in model.history)
    assert any("which sites took part" in u for u in spent.unprotected)


def test_fedavg_cdp_publishes_no_per_site_loss_even_when_every_site_takes_part():
    _, model = _fit("fedavg-cdp", 5.0, rounds=2, fraction=1.0, partition="iid:5")
    assert model.privacy.sample_rate == 1.0 and model.privacy.delta <= 1e-5
    for record in model.history:
        assert record["clients"] == 5 and "client_train_loss" not in record


def test_fedavg_dp_refuses_group_accounting():
    with pytest.raises(PrivacyError, match="one-per-unit"):
        splits = split_by_unit(make_toy_dataset(300, records_per_unit=2), seed=0)
        get_trainer("fedavg-dp").fit(
            splits=splits,
            config=TrainConfig(),
            privacy=PrivacyConfig(target_epsilon=1.0, unit_policy="group"),
            seed=0,
        )
