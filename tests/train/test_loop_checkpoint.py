import pickle
from pathlib import Path

import pytest
import torch

from medpriv.config import TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import CheckpointError
from medpriv.train.base import get_trainer
from medpriv.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import make_toy_dataset

CONFIG = dict(batch_size=64, hidden=(16, 8), dropout=0.1, patience=100)


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.scorer.network.parameters()]


def test_resume_continues_exactly_where_training_stopped(tmp_path: Path):
    splits = split_by_unit(make_toy_dataset(500), seed=0)
    trainer = get_trainer("baseline")
    straight = trainer.fit(
        splits=splits, config=TrainConfig(epochs=4, **CONFIG), seed=1, checkpoint=tmp_path / "a.pt"
    )
    ckpt = tmp_path / "b.pt"
    first = trainer.fit(
        splits=splits, config=TrainConfig(epochs=2, **CONFIG), seed=1, checkpoint=ckpt
    )
    assert [h["epoch"] for h in first.history] == [1, 2]
    resumed = trainer.fit(
        splits=splits, config=TrainConfig(epochs=4, **CONFIG), seed=1, checkpoint=ckpt, resume=True
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == straight.history  # same losses: optimizer and RNG state restored
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        assert torch.equal(a, b)
    _, meta = load_checkpoint(ckpt)
    assert meta["loop"]["epoch"] == 4


def test_resume_refuses_a_checkpoint_from_different_data(tmp_path: Path):
    trainer = get_trainer("baseline")
    ckpt = tmp_path / "c.pt"
    trainer.fit(
        splits=split_by_unit(make_toy_dataset(300), seed=0),
        config=TrainConfig(epochs=1, **CONFIG),
        checkpoint=ckpt,
    )
    with pytest.raises(CheckpointError, match="different run"):
        trainer.fit(
            splits=split_by_unit(make_toy_dataset(300, seed=5), seed=0),
            config=TrainConfig(epochs=2, **CONFIG),
            checkpoint=ckpt,
            resume=True,
        )


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_is_atomic_and_never_unpickles(tmp_path: Path):
    path = tmp_path / "x.pt"
    save_checkpoint(path, state={"w": torch.ones(3)}, meta={"epoch": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind
    state, meta = load_checkpoint(path)
    assert torch.equal(state["w"], torch.ones(3)) and meta["epoch"] == 1

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"meta": "{}", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_checkpoint(evil)
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_early_stopping_keeps_best_epoch():
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    config = TrainConfig(epochs=60, batch_size=64, hidden=(64, 64), patience=3, lr=0.01)
    model = get_trainer("baseline").fit(splits=splits, config=config, seed=0)
    best = model.params["best_epoch"]
    assert model.params["stopped_early"] and len(model.history) < 60
    assert len(model.history) - best >= 3
    best_auroc = max(h["val_auroc"] for h in model.history)
    assert model.history[best - 1]["val_auroc"] >= best_auroc - 0.01
