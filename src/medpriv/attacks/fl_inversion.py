"""`fl_inversion`: what an honest-but-curious server reconstructs from one client's update.

Against a federated model's global network, victim batches are drawn from the training
patients (the clients' records) and the server's view is simulated under four settings:

* `fedsgd` — one client's FedSGD gradient (mean cross-entropy), batch sizes 1, 4, 8, 16, 32;
* `fedavg` — one client's multi-step FedAvg update (2 local epochs of SGD with the model's
  learning rate and momentum, full batch), batch sizes 1 and 8;
* `dp` — the FedSGD gradient under sample-level DP: per-sample clipping and Gaussian noise
  (the model's σ and C for fedavg-dp, else σ = 1, C = 1), batch size 1. For a fedavg-dp model
  every view carries its clients' DP noise: that is all its server ever sees;
* `secagg` — secure aggregation: the server sees only the sum of several clients' gradients
  (4 clients with one record each), so it can at best invert the mixture.

Each is scored per feature against the distribution baseline (the prior's most likely record),
averaged over a few batches. The prior (column means and level frequencies) is the validation
patients', data the coordinator holds anyway.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.attacks.inversion import (
    FeatureLayout,
    FeaturePrior,
    evaluate_inversion,
    invert_fedavg,
    invert_fedsgd,
)
from medpriv.data.splits import Splits
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.step import noisy_clipped_sum
from medpriv.train.base import TrainedModel

FEDERATED_METHODS = ("fedavg", "fedavg-dp", "fedavg-cdp")
FEDSGD_BATCHES = (1, 4, 8, 16, 32)
FEDAVG_BATCHES = (1, 8)
SECAGG_CLIENTS = 4


def network_of(model: TrainedModel) -> nn.Module | None:
    """The torch network behind a model's scorer (through a calibration wrapper), if any."""
    scorer: Any = model.scorer
    for _ in range(3):
        if isinstance(getattr(scorer, "network", None), nn.Module):
            return scorer.network
        scorer = getattr(scorer, "scorer", None)
    return None


def _gradient(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[np.ndarray]:
    params = list(network.parameters())
    loss = F.cross_entropy(network(x), y)
    return [g.detach().numpy().copy() for g in torch.autograd.grad(loss, params)]


def _dp_gradient(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float, clip: float, seed: int
) -> list[np.ndarray]:
    """The victim's DP gradient as the attacker simulates it: the privacy core's clipped,
    noised sum (a replayable source: this is the attacker's simulation, not a guarantee)."""
    summed = noisy_clipped_sum(
        network,
        x,
        y,
        max_grad_norm=clip,
        noise_multiplier=sigma,
        noise=NoiseSource.reproducible(seed),
    )
    return [(g / len(x)).detach().numpy() for g in summed]


def _fedavg_update(
    network: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    momentum: float,
    dp: tuple[float, float, int] | None = None,
) -> list[np.ndarray]:
    """weights after − before, 2 local epochs of full-batch torch SGD on (x, y); with `dp`
    (σ, C, seed), each step's gradient is the clipped, noised one a fedavg-dp client sends."""
    before = [p.detach().clone() for p in network.parameters()]
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum)
    for step in range(2):
        optimizer.zero_grad(set_to_none=True)
        if dp is None:
            F.cross_entropy(network(x), y).backward()
        else:
            sigma, clip, seed = dp
            noisy = _dp_gradient(network, x, y, sigma=sigma, clip=clip, seed=seed + step)
            for p, g in zip(network.parameters(), noisy, strict=True):
                p.grad = torch.from_numpy(g)
        optimizer.step()
    update = [
        (p.detach() - b).numpy().copy() for p, b in zip(network.parameters(), before, strict=True)
    ]
    with torch.no_grad():
        for p, b in zip(network.parameters(), before, strict=True):
            p.copy_(b)
    return update


def fl_inversion(
    model: TrainedModel,
    splits: Splits,
    *,
    seed: int = 0,
    trials: int = 2,
    steps: int = 300,
    restarts: int = 4,
) -> dict[str, Any] | None:
    """The results.json block, or None for a model that is not federated (or not a network)."""
    network = network_of(model) if model.method in FEDERATED_METHODS else None
    if network is None:
        return None
    network = _float_copy(network)
    layout = FeatureLayout.from_preprocessor(model.preprocessor)
    victims = model.preprocessor.transform(splits.train.features).astype(np.float32)
    labels = splits.train.labels.astype(np.int64)
    prior = FeaturePrior.from_data(model.preprocessor.transform(splits.val.features))
    rng = np.random.default_rng(seed)
    params = model.params
    # fedavg-dp clients only ever send DP-SGD updates: every view of them carries the noise.
    protocol_dp = model.method == "fedavg-dp"
    dp_sigma = float(params.get("noise_multiplier") or 1.0) if protocol_dp else 1.0
    dp_clip = float(model.privacy.clipping_norm or 1.0) if protocol_dp else 1.0

    def run(view: str, size: int, trial: int) -> dict[str, Any]:
        rows = rng.choice(len(victims), size=size, replace=False)
        x, y = torch.from_numpy(victims[rows]), torch.from_numpy(labels[rows])
        common = {"layout": layout, "prior": prior, "steps": steps, "restarts": restarts}
        attack_seed = seed * 1000 + trial
        if view == "fedavg":
            update = _fedavg_update(
                network,
                x,
                y,
                lr=float(params.get("lr") or 0.05),
                momentum=float(params.get("momentum") or 0.0),
                dp=(dp_sigma, dp_clip, attack_seed) if protocol_dp else None,
            )
            found = invert_fedavg(
                network,
                update,
                local_epochs=2,
                local_lr=float(params.get("lr") or 0.05),
                local_batch_size=size,
                n_examples=size,
                local_momentum=float(params.get("momentum") or 0.0),
                seed=attack_seed,
                **common,
            )
        else:
            if view == "dp" or protocol_dp:
                gradient = _dp_gradient(
                    network, x, y, sigma=dp_sigma, clip=dp_clip, seed=attack_seed
                )
            else:  # fedsgd, and secagg (the sum of single-record clients = their mean gradient)
                gradient = _gradient(network, x, y)
            found = invert_fedsgd(network, gradient, batch_size=size, seed=attack_seed, **common)
        return evaluate_inversion(
            found, x_true=x.numpy(), y_true=y.numpy(), layout=layout, prior=prior
        ).to_dict()

    settings = (
        [("fedsgd", b) for b in FEDSGD_BATCHES]
        + [("fedavg", b) for b in FEDAVG_BATCHES]
        + [("dp", 1), ("secagg", SECAGG_CLIENTS)]
    )
    block: dict[str, Any] = {}
    for view, size in settings:
        if size > len(victims):
            continue
        runs = [run(view, size, t) for t in range(trials)]
        block.setdefault(view, {})[str(size)] = _mean(runs)
    block["dp"]["noise_multiplier"], block["dp"]["clipping_norm"] = dp_sigma, dp_clip
    block["secagg"]["clients"] = SECAGG_CLIENTS
    # The headline numbers (what the report's attack table shows), then how they were made.
    one = block.get("fedsgd", {}).get("1", {})
    block["accuracy_b1"] = one.get("accuracy")
    block["baseline_b1"] = one.get("baseline_accuracy")
    block["accuracy_dp_b1"] = block["dp"].get("1", {}).get("accuracy")
    block["accuracy_secagg"] = block["secagg"].get(str(SECAGG_CLIENTS), {}).get("accuracy")
    block["protocol"] = {
        "client_updates": "DP-SGD (clipped, noised)" if protocol_dp else "plain",
        "trials": trials,
        "steps": steps,
        "restarts": restarts,
        "threat_model": (
            "honest-but-curious server with the global model, the batch size, the local recipe "
            "and the validation patients' feature distribution as prior"
        ),
    }
    return block


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of the numeric fields over trials (per-feature accuracies included)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in runs if r[key] is not None]
            out[key] = float(np.mean(values)) if values else None
        elif isinstance(value, dict):
            out[key] = {k: float(np.mean([r[key][k] for r in runs])) for k in value}
        else:
            out[key] = value
    out["batch_size"] = int(runs[0]["batch_size"])
    return out


def _float_copy(network: nn.Module) -> nn.Module:
    """An independent float32 copy in eval mode (the attack must not touch the model)."""
    clone = copy.deepcopy(network).float()
    clone.eval()
    return clone
