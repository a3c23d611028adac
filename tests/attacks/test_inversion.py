"""Gradient inversion of FedSGD gradients and FedAvg updates on tabular rows (TabLeak)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from medpriv.attacks.inversion import (
    FeatureLayout,
    FeaturePrior,
    InversionResult,
    baseline_accuracy,
    evaluate_inversion,
    invert_fedavg,
    invert_fedsgd,
    reconstruction_accuracy,
    recover_labels,
)
from medpriv.data.dataset import Schema
from medpriv.data.preprocess import Preprocessor
from medpriv.errors import MedprivError
from medpriv.models import MLP

SCHEMA = Schema(numeric=("age", "bmi", "lactate"), categorical=("sex", "ethnicity"))


def _frame(n: int, seed: int) -> pd.DataFrame:
    """3 numeric columns (lactate with gaps, so a missing indicator) and 2 categorical ones."""
    rng = np.random.default_rng(seed)
    lactate = rng.lognormal(0.3, 0.5, n)
    lactate[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "age": rng.normal(62, 15, n),
            "bmi": rng.normal(28, 5, n),
            "lactate": lactate,
            "sex": rng.choice(["F", "M"], n),
            "ethnicity": rng.choice(
                ["white", "black", "asian", "other"], n, p=[0.5, 0.25, 0.15, 0.1]
            ),
        }
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny batched ops: one intra-op thread beats two contending ones on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup() -> dict:
    pre = Preprocessor(SCHEMA).fit(_frame(500, 0))
    layout = FeatureLayout.from_preprocessor(pre)
    x = pre.transform(_frame(300, 2))
    # labels depend on the features, so that a trained model has something to learn
    logit = 1.5 * x[:, 0] - x[:, 1] + 1.2 * x[:, layout.names.index("sex=M")]
    y = (np.random.default_rng(3).random(len(x)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = MLP(layout.n_features, (32, 16))
        trained = copy.deepcopy(untrained)
        optimizer = torch.optim.Adam(trained.parameters(), lr=0.01)
        for _ in range(150):
            optimizer.zero_grad()
            F.cross_entropy(trained(torch.as_tensor(x)), torch.as_tensor(y)).backward()
            optimizer.step()
    return {
        "pre": pre,
        "layout": layout,
        "prior": FeaturePrior.from_data(pre.transform(_frame(500, 1))),  # public reference rows
        "x": x,
        "y": y,
        "untrained": untrained,
        "trained": trained,
    }


def _gradient(network, x, y, *, clip=None, noise_multiplier=0.0, seed=0) -> list[torch.Tensor]:
    """What a FedSGD client sends (plain autograd), optionally clipped and noised as DP-SGD."""
    network.zero_grad()
    F.cross_entropy(network(torch.as_tensor(x)), torch.as_tensor(y)).backward()
    grads = [p.grad.detach().clone() for p in network.parameters()]
    if clip is not None:  # one record per batch here, so this is per-sample clipping
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
        generator = torch.Generator().manual_seed(seed)
        grads = [
            g * min(1.0, clip / float(norm))
            + noise_multiplier * clip / len(x) * torch.randn(g.shape, generator=generator)
            for g in grads
        ]
    return grads


def _fedavg_update(network, x, y, *, epochs, lr, batch_size, momentum) -> list[np.ndarray]:
    """weights_after − weights_before of a client running torch.optim.SGD in order."""
    local = copy.deepcopy(network)
    optimizer = torch.optim.SGD(local.parameters(), lr=lr, momentum=momentum)
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            optimizer.zero_grad()
            F.cross_entropy(local(torch.as_tensor(x[rows])), torch.as_tensor(y[rows])).backward()
            optimizer.step()
    return [
        (a - b).detach().numpy()
        for a, b in zip(local.parameters(), network.parameters(), strict=True)
    ]


def _attack_fedsgd(s: dict, rows: slice, **gradient_kwargs) -> InversionResult:
    x, y = s["x"][rows], s["y"][rows]
    grads = _gradient(s["untrained"], x, y, **gradient_kwargs)
    rec = invert_fedsgd(
        s["untrained"], grads, batch_size=len(x), layout=s["layout"], prior=s["prior"], seed=0
    )
    return evaluate_inversion(rec, x_true=x, y_true=y, layout=s["layout"], prior=s["prior"])


@pytest.fixture(scope="module")
def single_records(setup) -> list[InversionResult]:
    return [_attack_fedsgd(setup, slice(i, i + 1)) for i in range(3)]


def _mean(results: list[InversionResult], attribute: str = "accuracy") -> float:
    return float(np.mean([getattr(r.score, attribute) for r in results]))


def _baseline(results: list[InversionResult]) -> float:
    return float(np.mean([r.baseline.accuracy for r in results]))


def _population_baseline(s: dict) -> float:
    """The distribution baseline over all 300 rows (a single row's is mostly luck)."""
    return baseline_accuracy(s["x"], s["layout"], prior=s["prior"]).accuracy


# --- layout and scoring -------------------------------------------------------------------


def test_layout_follows_the_preprocessor(setup):
    layout, pre = setup["layout"], setup["pre"]
    assert layout.names == tuple(pre.feature_names_)
    assert layout.n_features == setup["x"].shape[1] == 10
    assert layout.continuous == (0, 1, 2)
    assert [layout.names[i] for i in layout.binary] == ["lactate_missing"]
    assert [name for name, _ in layout.groups] == ["sex", "ethnicity"]
    assert [len(idx) for _, idx in layout.groups] == [2, 4]
    assert layout.feature_names == ["age", "bmi", "lactate", "lactate_missing", "sex", "ethnicity"]
    np.testing.assert_allclose(layout.project(setup["x"]), setup["x"])  # already valid
    with pytest.raises(MedprivError, match="cover each column once"):
        FeatureLayout(names=("a", "b"), continuous=(0,), binary=(), groups=())


def test_accuracy_is_one_for_the_truth_and_ignores_row_order(setup):
    layout, x = setup["layout"], setup["x"][:16]
    perfect = reconstruction_accuracy(x, x, layout)
    assert perfect.accuracy == perfect.continuous == perfect.categorical == 1.0
    shuffled = x[np.random.default_rng(0).permutation(len(x))]
    assert reconstruction_accuracy(x, shuffled, layout).accuracy == 1.0
    near = x.copy()
    near[:, list(layout.continuous)] += 0.3  # inside TabLeak's ±0.319 σ
    assert reconstruction_accuracy(x, near, layout).accuracy == 1.0
    far = x.copy()
    far[:, 0] += 0.5
    score = reconstruction_accuracy(x, far, layout)
    assert score.per_feature["age"] == 0.0
    assert score.categorical == 1.0
    assert score.accuracy == pytest.approx(5 / 6)


def test_distribution_baseline_guesses_the_modal_record(setup):
    layout, x, prior = setup["layout"], setup["x"], setup["prior"]
    score = baseline_accuracy(x, layout, prior=prior)
    white = layout.names.index("ethnicity=white")
    assert score.per_feature["ethnicity"] == pytest.approx(x[:, white].mean())
    assert score.per_feature["lactate_missing"] == pytest.approx(1 - x[:, 3].mean())
    within = np.abs(x[:, 0] - prior.mean[0]) <= 0.319
    assert score.per_feature["age"] == pytest.approx(within.mean())
    assert 0.2 < score.accuracy < 0.6


# --- labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["untrained", "trained"])
def test_single_record_labels_are_exact(setup, model):
    network, x, y = setup[model], setup["x"], setup["y"]
    recovered = [
        int(
            recover_labels(
                network,
                _gradient(network, x[i : i + 1], y[i : i + 1]),
                batch_size=1,
                layout=setup["layout"],
                prior=setup["prior"],
            )[0]
        )
        for i in range(60)
    ]
    assert recovered == y[:60].tolist()


def test_label_counts_of_small_batches(setup):
    x, y, layout, prior = setup["x"], setup["y"], setup["layout"], setup["prior"]
    errors = {}
    for model in ("untrained", "trained"):
        network = setup[model]
        errors[model] = np.array(
            [
                recover_labels(
                    network,
                    _gradient(network, x[i : i + 4], y[i : i + 4]),
                    batch_size=4,
                    layout=layout,
                    prior=prior,
                ).sum()
                - y[i : i + 4].sum()
                for i in range(0, 200, 4)
            ]
        )
    # untrained: every prediction is near the prior mean, so the count is exact
    assert (errors["untrained"] == 0).all()
    # trained: the batch's mean probability strays from the prior's; counts stay close
    assert np.abs(errors["trained"]).mean() <= 1.0
    assert (np.abs(errors["trained"]) <= 1).mean() >= 0.75


def test_fedavg_label_counts_account_for_momentum(setup):
    """4 local steps of SGD with momentum 0.9 on 8 rows: counts read from the bias update."""
    network, x, y = setup["untrained"], setup["x"], setup["y"]
    errors = []
    for start in range(0, 80, 8):
        rows = slice(start, start + 8)
        update = _fedavg_update(
            network, x[rows], y[rows], epochs=2, lr=0.1, batch_size=4, momentum=0.9
        )
        rec = invert_fedavg(
            network,
            update,
            local_epochs=2,
            local_lr=0.1,
            local_batch_size=4,
            n_examples=8,
            local_momentum=0.9,
            layout=setup["layout"],
            prior=setup["prior"],
            steps=1,
            restarts=1,
        )
        errors.append(int(rec.labels.sum() - y[rows].sum()))
    assert np.abs(errors).max() <= 1
    assert np.mean(np.array(errors) == 0) >= 0.8


# --- reconstruction -----------------------------------------------------------------------


def test_fedsgd_recovers_a_single_record(setup, single_records):
    assert _mean(single_records) >= 0.8
    assert _mean(single_records) >= _population_baseline(setup) + 0.3
    assert _mean(single_records) > _baseline(single_records)
    assert all(r.labels_correct == 1.0 for r in single_records)


def test_accuracy_falls_as_the_batch_grows(setup, single_records):
    batch = _attack_fedsgd(setup, slice(100, 116))
    assert batch.batch_size == 16
    assert batch.score.accuracy <= _mean(single_records) - 0.15
    assert batch.score.accuracy > batch.baseline.accuracy  # still leaks at B = 16


def test_dp_noise_pushes_accuracy_to_the_baseline(setup, single_records):
    noisy = [
        _attack_fedsgd(setup, slice(i, i + 1), clip=1.0, noise_multiplier=1.0, seed=i)
        for i in range(3)
    ]
    assert _mean(noisy) <= _mean(single_records) - 0.4
    assert _mean(noisy) <= _population_baseline(setup) + 0.15


def test_fedavg_two_local_steps_still_leak_a_record(setup):
    network, layout, prior = setup["untrained"], setup["layout"], setup["prior"]
    results = []
    for i in range(2):
        x, y = setup["x"][i : i + 1], setup["y"][i : i + 1]
        recipe = {"epochs": 2, "lr": 0.1, "batch_size": 1, "momentum": 0.9}
        update = _fedavg_update(network, x, y, **recipe)
        rec = invert_fedavg(
            network,
            update,
            local_epochs=2,
            local_lr=0.1,
            local_batch_size=1,
            n_examples=1,
            local_momentum=0.9,
            layout=layout,
            prior=prior,
            restarts=4,
            seed=i,
        )
        results.append(evaluate_inversion(rec, x_true=x, y_true=y, layout=layout, prior=prior))
    assert _mean(results) >= 0.8
    assert _mean(results) >= _population_baseline(setup) + 0.3
    assert _mean(results) > _baseline(results)
    assert all(r.labels_correct == 1.0 for r in results)


def test_same_seed_same_reconstruction(setup):
    network, x, y = setup["untrained"], setup["x"][:4], setup["y"][:4]
    grads = {
        name: g
        for (name, _), g in zip(network.named_parameters(), _gradient(network, x, y), strict=True)
    }
    kwargs = {"batch_size": 4, "layout": setup["layout"], "steps": 40, "restarts": 3}
    state = torch.get_rng_state()
    first = invert_fedsgd(network, grads, seed=7, **kwargs)
    second = invert_fedsgd(network, grads, seed=7, **kwargs)
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.loss == second.loss
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert network.training  # the network's mode is restored


def test_result_is_json_ready_and_holds_no_rows(single_records):
    block = single_records[0].to_dict()
    assert json.loads(json.dumps(block)) == block
    assert {
        "batch_size",
        "accuracy",
        "baseline_accuracy",
        "continuous_accuracy",
        "categorical_accuracy",
        "labels_correct",
        "method",
    } <= set(block)
    assert block["batch_size"] == 1
    assert all(not isinstance(v, list) for v in block.values())


def test_bad_inputs_are_reported(setup):
    network, layout = setup["untrained"], setup["layout"]
    grads = _gradient(network, setup["x"][:1], setup["y"][:1])
    with pytest.raises(MedprivError, match="expected 6 arrays"):
        invert_fedsgd(network, grads[:-1], batch_size=1, layout=layout)
    with pytest.raises(MedprivError, match="shape"):
        invert_fedsgd(network, [g.reshape(-1) for g in grads], batch_size=1, layout=layout)
    with pytest.raises(MedprivError, match="input width"):
        invert_fedsgd(MLP(7, (8,)), grads, batch_size=1, layout=layout)
    with pytest.raises(MedprivError, match="local_lr"):
        invert_fedavg(
            network,
            grads,
            local_epochs=1,
            local_lr=0.0,
            local_batch_size=1,
            n_examples=1,
            layout=layout,
        )
