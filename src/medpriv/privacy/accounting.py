"""Privacy accounting (Opacus PRV / RDP accountants), δ defaults and group privacy."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from medpriv.errors import PrivacyError

ACCOUNTANTS = ("prv", "rdp")


def default_delta(n_units: int) -> float:
    """The largest power of ten at or below 1/(10·n_units): comfortably below 1/n."""
    if n_units < 1:
        raise PrivacyError("cannot choose δ for an empty training set")
    return 10.0 ** math.floor(math.log10(1.0 / (10.0 * n_units)))


def check_delta(delta: float, n_units: int) -> None:
    """δ must be below 1/n_units, or one unit's records could be released outright."""
    if not 0 < delta < 1.0 / n_units:
        raise PrivacyError(
            f"δ = {delta:g} is not below 1/n = {1.0 / n_units:.3g} for {n_units:,} units; "
            f"use e.g. --delta {default_delta(n_units):g}"
        )


def _memoize_rdp() -> None:
    """Cache Opacus's per-step RDP of the sampled Gaussian, a pure function of (q, σ, order).

    ε is recomputed after every epoch (and every federated round): the PRV accountant sizes its
    domain from RDP each time, and the same (q, σ) orders were being recomputed from scratch —
    most of a DP run's time at large ε. Same inputs, same floats: the accounting is unchanged.
    """
    from opacus.accountants.analysis import rdp

    if not hasattr(rdp._compute_rdp, "cache_info"):
        rdp._compute_rdp = functools.lru_cache(maxsize=65536)(rdp._compute_rdp)


def _accountant(name: str):  # -> opacus IAccountant
    if name not in ACCOUNTANTS:
        raise PrivacyError(f"unknown accountant {name!r}; valid: {', '.join(ACCOUNTANTS)}")
    from opacus.accountants import PRVAccountant, RDPAccountant

    _memoize_rdp()
    return PRVAccountant() if name == "prv" else RDPAccountant()


def epsilon_spent(
    *, accountant: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """ε after `steps` Poisson-subsampled Gaussian steps (same σ and q throughout)."""
    if steps <= 0:
        return 0.0
    acc = _accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PRV warns about its own discretization tolerances
        return float(acc.get_epsilon(delta=delta))


def epsilon_for_history(
    *, accountant: str, history: Sequence[tuple[float, float, int]], delta: float
) -> float:
    """ε after a composition of Poisson-subsampled Gaussian mechanisms, each entry
    (noise multiplier σ, sample rate q, steps), as Opacus's accountants compose their history
    (e.g. one patient whose records sit at several sites, each with its own q and σ)."""
    entries = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not entries:
        return 0.0
    acc = _accountant(accountant)
    acc.history = entries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=4096)
def _history_epsilon(
    accountant: str, history: tuple[tuple[float, float, int], ...], delta: float
) -> float:
    return epsilon_for_history(accountant=accountant, history=history, delta=delta)


@dataclass
class Accountant:
    """One accountant interface (Opacus's `IAccountant` shape): a history of Poisson-subsampled
    Gaussian steps (σ, q, steps), ε for a δ, and a state that is saved with the weights and
    checked when loaded."""

    mechanism: str = "prv"
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mechanism not in ACCOUNTANTS:
            raise PrivacyError(
                f"unknown accountant {self.mechanism!r}; valid: {', '.join(ACCOUNTANTS)}"
            )

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record `steps` more steps with (σ, q) (merged with the last entry when equal)."""
        entry = _checked_entry(noise_multiplier, sample_rate, steps)
        if self.history and self.history[-1][:2] == entry[:2]:
            last = self.history[-1]
            self.history[-1] = (last[0], last[1], last[2] + entry[2])
        elif entry[2] > 0:
            self.history.append(entry)

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def get_epsilon(self, delta: float) -> float:
        return _history_epsilon(self.mechanism, tuple(self.history), float(delta))

    def state_dict(self) -> dict:
        return {"mechanism": self.mechanism, "history": [list(e) for e in self.history]}

    @classmethod
    def from_state_dict(cls, state: object) -> Accountant:
        """The accountant saved by `state_dict`; anything malformed is a PrivacyError."""
        try:
            mechanism = str(state["mechanism"])  # type: ignore[index]
            history = [_checked_entry(*e) for e in state["history"]]  # type: ignore[index]
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyError(f"saved accountant state is malformed: {exc!r}") from None
        return cls(mechanism, history)


def _checked_entry(noise_multiplier: float, sample_rate: float, steps: int) -> tuple:
    sigma, q, n = float(noise_multiplier), float(sample_rate), int(steps)
    if not (math.isfinite(sigma) and sigma >= 0 and 0 < q <= 1 and n >= 0 and n == steps):
        raise PrivacyError(f"invalid accountant entry: σ={sigma}, q={q}, steps={steps}")
    return sigma, q, n


@functools.lru_cache(maxsize=1024)
def calibrate_noise(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """The smallest σ (to Opacus's tolerance) whose ε after `steps` is at most the target
    (memoised: a pure function of its arguments, asked by the recipe rule and the plan alike)."""
    from opacus.accountants.utils import get_noise_multiplier

    _memoize_rdp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )


def group_privacy(epsilon: float, delta: float, group_size: int) -> tuple[float, float]:
    """(ε, δ) for groups of `group_size` records: (kε, k·e^{(k−1)ε}·δ)."""
    k = group_size
    return k * epsilon, k * math.exp((k - 1) * epsilon) * delta
