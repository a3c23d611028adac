"""DP-SGD: accounting invariants, δ and sampler refusals, resume within a budget, unit policy."""

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpriv.config import ExperimentConfig, PrivacyConfig, TrainConfig, load_config
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import split_by_unit
from medpriv.errors import CheckpointError, PrivacyError
from medpriv.experiment import plan_runs
from medpriv.privacy.accounting import (
    calibrate_noise,
    check_delta,
    default_delta,
    epsilon_spent,
    group_privacy,
)
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.sampler import PoissonBatches, require_poisson
from medpriv.train.base import get_trainer
from medpriv.train.loop import shuffled_batches
from tests.conftest import make_toy_dataset

TRAIN = TrainConfig(epochs=2, batch_size=64, hidden=(16,), dropout=0.0, patience=100, lr=0.01)


def _privacy(**kw) -> PrivacyConfig:
    return PrivacyConfig(**{"engine": "opacus", "accountant": "rdp", **kw})


@settings(max_examples=20, deadline=None)
@given(sigma=st.floats(0.5, 5.0), q=st.floats(0.001, 0.2), steps=st.integers(1, 400))
def test_epsilon_strictly_increases_with_steps(sigma: float, q: float, steps: int):
    kw = dict(accountant="rdp", noise_multiplier=sigma, sample_rate=q, delta=1e-5)
    assert epsilon_spent(steps=steps + 1, **kw) > epsilon_spent(steps=steps, **kw) > 0


def test_prv_epsilon_increases_and_calibration_hits_the_target():
    kw = dict(accountant="prv", noise_multiplier=1.0, sample_rate=0.02, delta=1e-5)
    eps = [epsilon_spent(steps=s, **kw) for s in (10, 50, 100, 200)]
    assert all(a < b for a, b in itertools.pairwise(eps))
    sigma = calibrate_noise(
        target_epsilon=1.0, delta=1e-5, sample_rate=0.02, steps=500, accountant="prv"
    )
    spent = epsilon_spent(
        accountant="prv", noise_multiplier=sigma, sample_rate=0.02, steps=500, delta=1e-5
    )
    assert 0.9 <= spent <= 1.0


def test_delta_defaults_below_one_over_n_and_larger_delta_is_refused():
    for n in (1, 99, 100, 6656, 10**6):
        assert default_delta(n) < 1 / n
        check_delta(default_delta(n), n)
    with pytest.raises(PrivacyError, match="not below 1/n"):
        check_delta(1 / 100, 100)
    splits = split_by_unit(make_toy_dataset(300), seed=0)
    with pytest.raises(PrivacyError, match="not below 1/n"):
        get_trainer("dp-sgd").fit(splits=splits, config=TRAIN, privacy=_privacy(delta=0.01))


def test_a_non_poisson_sampler_is_refused():
    require_poisson(PoissonBatches(sample_rate=0.1, steps_per_epoch=10, noise=NoiseSource.fresh()))
    with pytest.raises(PrivacyError, match="not Poisson"):
        require_poisson(shuffled_batches(64))


def test_poisson_batches_include_each_row_with_probability_q():
    import torch

    torch.manual_seed(0)
    sampler = PoissonBatches(sample_rate=0.05, steps_per_epoch=400, noise=NoiseSource.fresh())
    sizes = np.array([len(b) for b in sampler(1000)])
    assert len(sizes) == 400 and abs(sizes.mean() - 50) < 2 and sizes.std() > 3


def test_dp_sgd_reports_the_accountant_and_epsilon_per_epoch():
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    model = get_trainer("dp-sgd").fit(
        splits=splits, config=replace(TRAIN, epochs=3), privacy=_privacy(target_epsilon=2.0)
    )
    p = model.privacy
    assert p.sampling == "poisson" and p.accountant == "rdp" and p.level == "sample"
    assert p.delta < 1 / splits.train.n_units and p.clipping_norm == 1.0
    assert p.steps == 3 * round(1 / p.sample_rate)
    epsilons = [h["epsilon"] for h in model.history]
    assert all(a < b for a, b in itertools.pairwise(epsilons))
    assert epsilons[-1] == pytest.approx(p.epsilon) and p.epsilon <= 2.0
    assert "ε = " in p.statement() and "Caveats" in p.statement()


def test_resume_gives_the_same_epsilon_as_training_in_one_go(tmp_path: Path):
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    privacy = _privacy(noise_multiplier=1.2, accountant="prv")
    trainer = get_trainer("dp-sgd")
    straight = trainer.fit(
        splits=splits,
        config=replace(TRAIN, epochs=4),
        privacy=privacy,
        checkpoint=tmp_path / "a.pt",
    )
    trainer.fit(
        splits=splits,
        config=replace(TRAIN, epochs=2),
        privacy=privacy,
        checkpoint=tmp_path / "b.pt",
    )
    resumed = trainer.fit(
        splits=splits,
        config=replace(TRAIN, epochs=4),
        privacy=privacy,
        checkpoint=tmp_path / "b.pt",
        resume=True,
    )
    assert resumed.privacy.steps == straight.privacy.steps
    assert resumed.privacy.epsilon == pytest.approx(straight.privacy.epsilon, abs=1e-6)
    assert [h["epsilon"] for h in resumed.history] == pytest.approx(
        [h["epsilon"] for h in straight.history], abs=1e-6
    )


def test_resume_keeps_the_calibrated_noise_and_refuses_another_accountant(tmp_path: Path):
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    trainer = get_trainer("dp-sgd")
    first = trainer.fit(
        splits=splits,
        config=TRAIN,
        privacy=_privacy(target_epsilon=1.0),
        checkpoint=tmp_path / "c.pt",
    )
    longer = trainer.fit(
        splits=splits,
        config=replace(TRAIN, epochs=3),
        privacy=_privacy(target_epsilon=1.0),
        checkpoint=tmp_path / "c.pt",
        resume=True,
    )
    assert longer.privacy.noise_multiplier == first.privacy.noise_multiplier
    assert longer.privacy.epsilon > first.privacy.epsilon  # the budget keeps being spent
    with pytest.raises(CheckpointError, match="accountant"):
        trainer.fit(
            splits=splits,
            config=replace(TRAIN, epochs=4),
            privacy=_privacy(target_epsilon=1.0, accountant="prv"),
            checkpoint=tmp_path / "c.pt",
            resume=True,
        )
    with pytest.raises(CheckpointError, match="hidden"):
        trainer.fit(
            splits=splits,
            config=replace(TRAIN, epochs=4, hidden=(8, 8)),
            privacy=_privacy(target_epsilon=1.0),
            checkpoint=tmp_path / "c.pt",
            resume=True,
        )


def test_budget_is_enforced_unless_allowed(tmp_path: Path):
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    trainer = get_trainer("dp-sgd")
    privacy = _privacy(noise_multiplier=1.0)
    trainer.fit(splits=splits, config=TRAIN, privacy=privacy, checkpoint=tmp_path / "d.pt")
    tight = replace(privacy, budget=1.0)
    with pytest.raises(PrivacyError, match="over the budget of 1"):
        trainer.fit(
            splits=splits,
            config=replace(TRAIN, epochs=20),
            privacy=tight,
            checkpoint=tmp_path / "d.pt",
            resume=True,
        )
    over = trainer.fit(
        splits=splits,
        config=replace(TRAIN, epochs=3),
        privacy=replace(tight, allow_over_budget=True),
        checkpoint=tmp_path / "d.pt",
        resume=True,
    )
    assert over.privacy.epsilon > 1.0
    assert any("over the budget" in c for c in over.privacy.caveats)


def test_several_records_per_unit_one_per_unit_or_group_privacy():
    splits = split_by_unit(make_toy_dataset(600, records_per_unit=3), seed=0)
    trainer = get_trainer("dp-sgd")
    one = trainer.fit(splits=splits, config=TRAIN, privacy=_privacy(noise_multiplier=1.5))
    assert any("one per unit" in c for c in one.privacy.caveats)
    grouped = trainer.fit(
        splits=splits, config=TRAIN, privacy=_privacy(noise_multiplier=1.5, unit_policy="group")
    )
    assert grouped.params["group_size"] == 3
    record_eps = epsilon_spent(
        accountant="rdp",
        noise_multiplier=1.5,
        sample_rate=grouped.privacy.sample_rate,
        steps=grouped.privacy.steps,
        delta=grouped.params["record_delta"],
    )
    assert grouped.privacy.epsilon == pytest.approx(3 * record_eps)
    _, delta_unit = group_privacy(record_eps, grouped.params["record_delta"], 3)
    assert delta_unit == pytest.approx(grouped.privacy.delta)
    assert grouped.privacy.delta <= default_delta(splits.train.n_units)
    calibrated = trainer.fit(
        splits=splits, config=TRAIN, privacy=_privacy(target_epsilon=3.0, unit_policy="group")
    )
    assert calibrated.privacy.epsilon <= 3.0
    assert calibrated.privacy.delta <= default_delta(splits.train.n_units)


def test_epsilon_sweep_plans_one_run_per_method_and_epsilon():
    config: ExperimentConfig = load_config(
        None, {"run": {"methods": "baseline,dp-sgd", "epsilons": "0.5,1,3,8", "seeds": 2}}
    )
    names = [r.name for r in plan_runs(config, {"baseline": False, "dp-sgd": True})]
    assert names[:5] == [
        "baseline seed=0",
        "dp-sgd eps=0.5 seed=0",
        "dp-sgd eps=1 seed=0",
        "dp-sgd eps=3 seed=0",
        "dp-sgd eps=8 seed=0",
    ]
    assert len(names) == 10
    runs = plan_runs(config, {"baseline": False, "dp-sgd": True})
    assert [r.privacy.target_epsilon for r in runs[1:5]] == [0.5, 1.0, 3.0, 8.0]


def test_fast_engine_is_the_default_and_matches_the_accounting_of_opacus():
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    trainer = get_trainer("dp-sgd")
    fast = trainer.fit(splits=splits, config=TRAIN, privacy=PrivacyConfig(noise_multiplier=1.0))
    ref = trainer.fit(
        splits=splits, config=TRAIN, privacy=PrivacyConfig(noise_multiplier=1.0, engine="opacus")
    )
    assert fast.params["engine"] == "fast" and ref.params["engine"] == "opacus"
    assert fast.privacy.epsilon == pytest.approx(ref.privacy.epsilon)
    assert fast.privacy.steps == ref.privacy.steps


def test_nothing_released_is_computed_from_training_records_without_dp():
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    model = get_trainer("dp-sgd").fit(
        splits=splits, config=TRAIN, privacy=PrivacyConfig(noise_multiplier=1.0)
    )
    fitted_on_val = Preprocessor(splits.val.schema).fit(splits.val.features).state_dict()
    assert model.preprocessor.state_dict() == fitted_on_val
    assert all("train_loss" not in h and "train_accuracy" not in h for h in model.history)
    assert model.privacy.caveats[0].startswith("validation records")
    baseline = get_trainer("baseline").fit(splits=splits, config=TRAIN)
    assert "train_loss" in baseline.history[0]
