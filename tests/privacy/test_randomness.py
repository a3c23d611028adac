"""The randomness a guarantee rests on: fresh from the OS CSPRNG, never replayable from anything
medpriv writes (run seed, results.json, config, checkpoint), never pickled; replayable only on
request, and then stated as carrying no guarantee."""

from __future__ import annotations

import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import CheckpointError, PrivacyError
from medpriv.models import MLP
from medpriv.privacy import randomness
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.sampler import PoissonBatches
from medpriv.privacy.step import make_fast_dp_step
from medpriv.train.base import get_trainer
from medpriv.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import make_toy_dataset

SRC = Path(__file__).resolve().parents[2] / "src" / "medpriv"
TRAIN = TrainConfig(epochs=2, batch_size=64, hidden=(8,), dropout=0.0, patience=100, lr=0.05)
PRIVACY = PrivacyConfig(target_epsilon=2.0, accountant="rdp")


def _weights(model) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.scorer.network.parameters()])


def _released(model) -> np.ndarray:
    """What a released model answers on fixed inputs (the scorer may be calibrated)."""
    x = np.linspace(-2, 2, 40 * len(model.preprocessor.feature_names_)).reshape(40, -1)
    return np.asarray(model.scorer.margin(x))


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(400), seed=0)


def test_same_seed_dp_sgd_differs_while_the_baseline_is_identical(splits):
    dp = [get_trainer("dp-sgd").fit(splits=splits, config=TRAIN, privacy=PRIVACY, seed=0)]
    dp.append(get_trainer("dp-sgd").fit(splits=splits, config=TRAIN, privacy=PRIVACY, seed=0))
    assert not np.allclose(_released(dp[0]), _released(dp[1]))
    assert dp[0].privacy.noise == "csprng" and dp[0].privacy.guaranteed
    base = [get_trainer("baseline").fit(splits=splits, config=TRAIN, seed=0) for _ in range(2)]
    np.testing.assert_array_equal(_released(base[0]), _released(base[1]))


def test_reproducible_noise_replays_and_says_it_carries_no_guarantee(splits):
    privacy = replace(PRIVACY, reproducible_noise=True)
    runs = [
        get_trainer("dp-sgd").fit(splits=splits, config=TRAIN, privacy=privacy, seed=3)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(_released(runs[0]), _released(runs[1]))
    spent = runs[0].privacy
    assert spent.noise == "reproducible" and not spent.guaranteed
    assert spent.statement().startswith("NO GUARANTEE")
    assert spent.to_dict()["noise"] == "reproducible"


def test_nothing_medpriv_wrote_replays_a_runs_noise(splits, tmp_path: Path):
    """An adversary holding the run seed, the config and the checkpoint (weights, optimizer,
    RNG state, accountant) replays the run every way those allow: none gives the released
    model. The same replay does reproduce a --reproducible-noise run (the test has power)."""
    released = get_trainer("dp-sgd").fit(
        splits=splits, config=TRAIN, privacy=PRIVACY, seed=5, checkpoint=tmp_path / "run.pt"
    )
    payload, meta = load_checkpoint(tmp_path / "run.pt")
    assert not re.search(r"noise_seed|csprng_seed|generator", str(sorted(meta)), re.I)
    replays = [
        # the run seed, as a replayable source would use it
        get_trainer("dp-sgd").fit(
            splits=splits,
            config=TRAIN,
            privacy=replace(PRIVACY, reproducible_noise=True),
            seed=5,
        ),
    ]
    torch.set_rng_state(payload["rng"])  # torch's global RNG as the checkpoint recorded it
    replays.append(get_trainer("dp-sgd").fit(splits=splits, config=TRAIN, privacy=PRIVACY, seed=5))
    for replay in replays:
        assert not np.allclose(_released(replay), _released(released))
    control = [
        get_trainer("dp-sgd").fit(
            splits=splits,
            config=TRAIN,
            privacy=replace(PRIVACY, reproducible_noise=True),
            seed=5,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(_released(control[0]), _released(control[1]))


def test_the_noise_of_a_step_comes_only_from_the_os_csprng(monkeypatch):
    """Pure-noise steps (empty batch): torch's global seed does not fix them; the only input
    that does is what `secrets` returns (pinned here to show the dependence)."""

    def noise_of_one_step() -> torch.Tensor:
        torch.manual_seed(0)
        network = MLP(4, (3,))
        step = make_fast_dp_step(
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=1.0,
            noise=NoiseSource.fresh(),
        )
        step(network, torch.optim.SGD(network.parameters(), lr=0.0), torch.zeros(0, 4),
             torch.zeros(0, dtype=torch.long))  # fmt: skip
        return torch.cat([p.grad.reshape(-1) for p in network.parameters()]).clone()

    assert not torch.equal(noise_of_one_step(), noise_of_one_step())
    monkeypatch.setattr(randomness.secrets, "randbits", lambda bits: 12345)
    assert torch.equal(noise_of_one_step(), noise_of_one_step())


def test_poisson_masks_do_not_follow_torchs_global_rng():
    masks = []
    for _ in range(2):
        torch.manual_seed(0)
        sampler = PoissonBatches(sample_rate=0.5, steps_per_epoch=3, noise=NoiseSource.fresh())
        masks.append(torch.cat(list(sampler(200))))
    assert not torch.equal(masks[0], masks[1])


def test_a_noise_source_is_never_pickled_or_saved(tmp_path: Path):
    source = NoiseSource.fresh()
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(source)
    with pytest.raises(Exception, match="never pickled"):
        save_checkpoint(tmp_path / "x.pt", state={"noise": source}, meta={})
    assert "seed" not in repr(source)


def test_secure_draws_have_the_requested_spread():
    fresh = NoiseSource.fresh()
    draws = fresh.gaussian_(torch.empty(200_000), 1.7)
    assert abs(float(draws.std()) / 1.7 - 1) < 0.01 and abs(float(draws.mean())) < 0.02
    assert float(fresh.gaussian_(torch.ones(5), 0.0).abs().sum()) == 0
    with pytest.raises(ValueError):
        fresh.gaussian_(torch.empty(3), -1.0)


def test_a_tampered_accountant_in_a_checkpoint_is_refused(splits, tmp_path: Path):
    path = tmp_path / "dp.pt"
    config = replace(TRAIN, epochs=2)
    get_trainer("dp-sgd").fit(splits=splits, config=config, privacy=PRIVACY, checkpoint=path)
    payload, meta = load_checkpoint(path)
    meta.pop("format")
    history = meta["stateful"]["accountant"]["history"]
    history[0][2] //= 2  # claim half the steps were taken
    save_checkpoint(path, state=payload, meta=meta)
    with pytest.raises(PrivacyError, match="inconsistent"):
        get_trainer("dp-sgd").fit(
            splits=splits,
            config=replace(config, epochs=3),
            privacy=PRIVACY,
            checkpoint=path,
            resume=True,
        )
    del meta["stateful"]
    save_checkpoint(path, state=payload, meta=meta)
    with pytest.raises(CheckpointError, match="accountant"):
        get_trainer("dp-sgd").fit(
            splits=splits, config=config, privacy=PRIVACY, checkpoint=path, resume=True
        )


# Calls that draw random numbers. Outside `privacy/`, only the attacker's simulations
# (`attacks/`), the synthetic data generator and the seeded splits may draw them; every other
# draw in the training code would be privacy noise or sampling outside the one mechanism.
DRAWS = re.compile(
    r"torch\.normal\(|\.normal_\(|randn|\.normal\(|torch\.rand\(|bernoulli|laplace|"
    r"geometric_|\.exponential|default_rng|random_state\s*=\s*seed"
)
ALLOWED = {"privacy", "attacks", "data"}
# Files outside those whose draws are no part of any guarantee, and why.
NOT_PRIVACY_NOISE = {
    "metrics.py": "bootstrap resampling of test predictions for confidence intervals",
    "train/logreg.py": "the non-private logistic regression's solver seed",
    "train/federated/server.py": "seeded fixed-size client selection for non-private and "
    "sample-level rounds (no guarantee rests on which clients train); client-level DP "
    "participation is drawn by the core's NoiseSource",
}


def test_no_privacy_noise_is_drawn_outside_the_privacy_core():
    offenders = []
    for path in SRC.rglob("*.py"):
        part = path.relative_to(SRC).parts[0]
        if part in ALLOWED or str(path.relative_to(SRC)) in NOT_PRIVACY_NOISE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if DRAWS.search(code):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "random draws outside medpriv.privacy:\n" + "\n".join(offenders)
