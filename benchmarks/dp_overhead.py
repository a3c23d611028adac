"""Wall time of DP-SGD against a non-private loop: Opacus `hooks`, Opacus `ghost`, and ours.

All four train the same MLP (features -> 128 -> 64 -> 2, same initial weights) with Adam on the
same synthetic data (standard-normal features, linear-logistic label), batch size and epochs:

* nonprivate   tensor-indexed batches from torch.randperm, plain cross-entropy;
* opacus_hooks PrivacyEngine.make_private(grad_sample_mode="hooks"), Poisson sampling, a
               DataLoader over a dataset that returns whole batches (`__getitems__`);
* opacus_ghost the same with grad_sample_mode="ghost" and the criterion make_private returns;
* ours         medpriv's own path: a fresh CSPRNG-seeded NoiseSource (seeded inside the timed
               run), its Poisson sampler (medpriv.privacy.sampler.PoissonBatches) and the fast
               DP step (medpriv.privacy.step.make_fast_dp_step, secure-mode noise), q = batch/rows;
* ours_single_draw  the same with one Gaussian draw per coordinate (a reproducible source, no
               guarantee): the difference is the cost of the secure-mode draw;

Every method is warmed up once on a small run, then timed: best of --repeats, taken round-robin
(model, optimizer and Opacus setup excluded). Prints a table and, as the last line, one JSON object.

    .venv/bin/python benchmarks/dp_overhead.py
    .venv/bin/python benchmarks/dp_overhead.py --device cuda --rows 200000 --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.sampler import PoissonBatches
from medpriv.privacy.step import make_fast_dp_step
from medpriv.train.loop import plain_step

HIDDEN = (128, 64)
LR = 1e-3


@dataclass(frozen=True)
class Setting:
    """What every method shares."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    epochs: int
    noise_multiplier: float
    max_grad_norm: float
    seed: int

    @property
    def sample_rate(self) -> float:
        return self.batch_size / len(self.x)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best kept)")
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_data(rows: int, features: int, seed: int, device: str) -> tuple[torch.Tensor, ...]:
    """Standard-normal features; label ~ Bernoulli(sigmoid(x @ w))."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=gen)
    w = torch.randn(features, generator=gen) * (2.0 / math.sqrt(features))
    y = (torch.rand(rows, generator=gen) < torch.sigmoid(x @ w)).long()
    return x.to(device), y.to(device)


def fresh_model(s: Setting) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(s.seed)
    model = MLP(s.x.shape[1], HIDDEN).to(s.x.device)
    return model, torch.optim.Adam(model.parameters(), lr=LR)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nonprivate(s: Setting) -> Callable[[], None]:
    model, optimizer = fresh_model(s)

    def train() -> None:
        n = len(s.x)
        for _ in range(s.epochs):
            order = torch.randperm(n, device=s.x.device)
            for start in range(0, n, s.batch_size):
                idx = order[start : start + s.batch_size]
                plain_step(model, optimizer, s.x[idx], s.y[idx])

    return train


def ours(s: Setting, *, secure: bool = True) -> Callable[[], None]:
    """medpriv's path; `secure=False` swaps in a reproducible source (one draw per coordinate
    instead of the secure-mode four), to show what the floating-point defense costs."""
    model, optimizer = fresh_model(s)
    n, q = len(s.x), s.sample_rate

    def train() -> None:
        # CSPRNG seeding is part of the cost
        noise = NoiseSource.fresh() if secure else NoiseSource.reproducible(s.seed)
        step = make_fast_dp_step(
            max_grad_norm=s.max_grad_norm,
            noise_multiplier=s.noise_multiplier,
            expected_batch_size=q * n,
            noise=noise,
        )
        batches = PoissonBatches(sample_rate=q, steps_per_epoch=s.steps_per_epoch, noise=noise)
        for _ in range(s.epochs):
            for idx in batches(n):
                step(model, optimizer, s.x[idx], s.y[idx])

    return train


class WholeBatches(Dataset):
    """Rows of two tensors; `__getitems__` returns a whole batch in one indexing operation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return self.x[idx], self.y[idx]


def _as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


def opacus(s: Setting, mode: str) -> Callable[[], None]:
    from opacus import PrivacyEngine

    model, optimizer = fresh_model(s)
    loader = DataLoader(WholeBatches(s.x, s.y), batch_size=s.batch_size, collate_fn=_as_is)
    engine = PrivacyEngine()
    common = dict(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=s.noise_multiplier,
        max_grad_norm=s.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode=mode,
    )
    if mode == "ghost":
        model, optimizer, criterion, loader = engine.make_private(
            **common, criterion=nn.CrossEntropyLoss()
        )
    else:
        model, optimizer, loader = engine.make_private(**common)
        criterion = nn.CrossEntropyLoss()

    def train() -> None:
        for _ in range(s.epochs):
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                criterion(model(xb), yb).backward()
                optimizer.step()

    return train


METHODS: dict[str, Callable[[Setting], Callable[[], None]]] = {
    "nonprivate": nonprivate,
    "opacus_hooks": lambda s: opacus(s, "hooks"),
    "opacus_ghost": lambda s: opacus(s, "ghost"),
    "ours": ours,
    "ours_single_draw": lambda s: ours(s, secure=False),
}


def warm_up(make: Callable[[Setting], Callable[[], None]], s: Setting) -> None:
    """One small run: first-call costs (allocations, lazy inits) stay out of the timings."""
    rows = min(len(s.x), 8 * s.batch_size)
    make(Setting(s.x[:rows], s.y[:rows], s.batch_size, 1, *_tail(s)))()


def time_once(make: Callable[[Setting], Callable[[], None]], s: Setting) -> float:
    """Seconds for one full training run (model, optimizer and Opacus setup excluded)."""
    train = make(s)
    sync(s.x.device)
    start = time.perf_counter()
    train()
    sync(s.x.device)
    return time.perf_counter() - start


def time_methods(s: Setting, repeats: int) -> dict[str, float]:
    """Best of `repeats` per method; repeats go round-robin so load drifts hit all methods."""
    for make in METHODS.values():
        warm_up(make, s)
    best = dict.fromkeys(METHODS, math.inf)
    for _ in range(repeats):
        for name, make in METHODS.items():
            best[name] = min(best[name], time_once(make, s))
    return best


def _tail(s: Setting) -> tuple[float, float, int]:
    return s.noise_multiplier, s.max_grad_norm, s.seed


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # Opacus's secure-RNG and accountant notices
    x, y = make_data(args.rows, args.features, args.seed, args.device)
    s = Setting(
        x, y, args.batch_size, args.epochs, args.noise_multiplier, args.max_grad_norm, args.seed
    )
    seconds = time_methods(s, args.repeats)
    base = seconds["nonprivate"]
    print(
        f"MLP {args.features}->{'->'.join(map(str, HIDDEN))}->2, {args.rows:,} rows, "
        f"batch {args.batch_size}, {args.epochs} epochs, Adam, sigma={args.noise_multiplier}, "
        f"C={args.max_grad_norm}, device {args.device}, {torch.get_num_threads()} threads"
    )
    width = max(map(len, seconds)) + 2
    print(f"{'method':<{width}}{'seconds':>9}{'x non-private':>15}")
    for name, value in seconds.items():
        print(f"{name:<{width}}{value:>9.3f}{value / base:>15.2f}")
    result = {
        "nonprivate_s": round(base, 4),
        "opacus_hooks_s": round(seconds["opacus_hooks"], 4),
        "opacus_ghost_s": round(seconds["opacus_ghost"], 4),
        "ours_s": round(seconds["ours"], 4),
        "ours_over_nonprivate": round(seconds["ours"] / base, 3),
        "ours_single_draw_over_nonprivate": round(seconds["ours_single_draw"] / base, 3),
        "opacus_ghost_over_nonprivate": round(seconds["opacus_ghost"] / base, 3),
        "opacus_hooks_over_nonprivate": round(seconds["opacus_hooks"] / base, 3),
        "rows": args.rows,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "device": args.device,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
