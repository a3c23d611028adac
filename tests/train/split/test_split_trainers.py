"""Split learning trains the same MLP as centralized training: vanilla and U-shaped, any cut,
reproduce the baseline step for step (same seed, no dropout); a checkpointed run resumes to the
same weights; the activation-noise defense changes what is sent."""

from __future__ import annotations

import numpy as np
import pytest

from medpriv.config import SplitLearningConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset

CONFIG = TrainConfig(epochs=3, dropout=0.0, hidden=(16, 8, 4), batch_size=64)


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(600), seed=0)


@pytest.fixture(scope="module")
def baseline(splits):
    return get_trainer("baseline").fit(splits=splits, config=CONFIG, seed=3)


def _fit(splits, method: str, **settings):
    trainer = get_trainer(method, split_learning=SplitLearningConfig(**settings))
    return trainer.fit(splits=splits, config=CONFIG, seed=3)


@pytest.mark.parametrize(
    ("method", "cut"), [("split", 1), ("split", 3), ("split-ushaped", 1), ("split-ushaped", 2)]
)
def test_split_learning_reproduces_centralized_training(splits, baseline, method, cut):
    model = _fit(splits, method, cut=cut)
    diff = np.abs(model.margin(splits.test) - baseline.margin(splits.test)).max()
    assert diff <= 1e-5
    assert [r["val_loss"] for r in model.history] == pytest.approx(
        [r["val_loss"] for r in baseline.history], abs=1e-6
    )
    traffic = model.params["traffic"]
    steps = len(model.history) * int(np.ceil(len(splits.train) / 64))
    per_step = 1 if method == "split" else 2
    assert traffic["round_trips_by_op"].get("train" if per_step == 1 else "forward") == steps
    assert model.cost.bytes_communicated == traffic["bytes_sent"] + traffic["bytes_received"]


def test_u_shaped_needs_a_server_layer_and_cuts_must_fit(splits):
    with pytest.raises(ConfigError, match="U-shaped"):
        _fit(splits, "split-ushaped", cut=3)
    with pytest.raises(ConfigError, match="between 1 and 3"):
        _fit(splits, "split", cut=4)


def test_a_checkpointed_split_run_resumes_to_the_same_weights(splits, tmp_path):
    trainer = get_trainer("split-ushaped", split_learning=SplitLearningConfig())
    whole = trainer.fit(splits=splits, config=CONFIG, seed=1)
    path = tmp_path / "sl.pt"
    short = TrainConfig(**{**CONFIG.__dict__, "epochs": 2})
    trainer.fit(splits=splits, config=short, seed=1, checkpoint=path)
    # A new server process would start empty: the checkpoint carries its part and optimizer.
    resumed = get_trainer("split-ushaped", split_learning=SplitLearningConfig()).fit(
        splits=splits, config=CONFIG, seed=1, checkpoint=path, resume=True
    )
    assert len(resumed.history) == 3
    assert np.abs(resumed.margin(splits.test) - whole.margin(splits.test)).max() <= 1e-6


def test_activation_noise_is_a_training_time_defense(splits, baseline):
    noisy = _fit(splits, "split", noise=1.0)
    assert noisy.params["activation_noise"] == 1.0
    assert np.abs(noisy.margin(splits.test) - baseline.margin(splits.test)).max() > 1e-3


def test_client_batches_cover_every_row_once_in_turn_or_interleaved():
    import torch

    from medpriv.train.split.clients import Cursor, client_batches

    groups = [np.arange(0, 10), np.arange(10, 15), np.arange(15, 30)]
    for interleave in (False, True):
        cursor = Cursor()
        torch.manual_seed(0)
        seen, owners = [], []
        for idx in client_batches(groups, 4, interleave=interleave, cursor=cursor)(30):
            owner = cursor.client
            assert set(idx.tolist()) <= set(groups[owner].tolist())
            seen += idx.tolist()
            owners.append(owner)
        assert sorted(seen) == list(range(30))
        if interleave:
            assert owners == [0, 1, 2, 0, 1, 2, 0, 2, 2]
        else:
            assert owners == sorted(owners)


def test_splitfed_averages_the_client_layers_by_record_count():
    import torch

    from medpriv.train.split.client import SplitNetwork
    from medpriv.train.split.clients import Cursor, SplitFedClients

    bottom = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    network = SplitNetwork(bottom, remote=None, head=None)  # type: ignore[arg-type]
    clients = SplitFedClients(network, [1, 3], {"optimizer": "sgd", "lr": 0.1}, Cursor())
    with torch.no_grad():
        for value, copy in zip((1.0, 5.0), clients.copies, strict=True):
            for p in copy.parameters():
                p.fill_(value)
    clients.average()
    for p in network.bottom.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.25 * 1.0 + 0.75 * 5.0))
    for copy in clients.copies:
        for a, b in zip(copy.parameters(), network.bottom.parameters(), strict=True):
            assert torch.equal(a, b)


def test_several_hospitals_in_turn_and_splitfed_train_and_resume(splits, baseline, tmp_path):
    in_turn = _fit(splits, "split-ushaped", clients="site")
    assert in_turn.params["client_schedule"] == "in turn"
    assert set(in_turn.params["clients"]) == {"north", "south"}
    fed = _fit(splits, "splitfed")
    assert fed.params["client_schedule"] == "in parallel, averaged each epoch"
    for model in (in_turn, fed):
        assert np.isfinite(model.margin(splits.test)).all()
        assert model.history[-1]["val_loss"] < model.history[0]["val_loss"] * 1.5
    # SplitFed checkpoints at epoch ends, where every client holds the average: resume is exact.
    trainer = get_trainer("splitfed", split_learning=SplitLearningConfig())
    path = tmp_path / "sf.pt"
    short = TrainConfig(**{**CONFIG.__dict__, "epochs": 2})
    trainer.fit(splits=splits, config=short, seed=3, checkpoint=path)
    resumed = trainer.fit(splits=splits, config=CONFIG, seed=3, checkpoint=path, resume=True)
    assert np.abs(resumed.margin(splits.test) - fed.margin(splits.test)).max() <= 1e-6
