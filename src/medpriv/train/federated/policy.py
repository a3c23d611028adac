"""A federated client's own privacy: its policy, its ledger (its own accountant) and its noise.

A client — an in-process site or a hospital's SuperNode — is started with a `ClientPolicy` that
no message can change: the largest ε it will spend (its budget, over everything its records ever
went through), the smallest noise multiplier and the largest clipping norm it accepts, its δ and
accountant, and whether its noise is replayable (for tests and debugging only; only the client's
own configuration can ask for that, never a message).

Before a DP round it checks the coordinator's recipe against the policy and projects, with its
own accountant, what the announced plan would spend (its ledger so far, plus this round and the
rounds announced after it, at the σ, Poisson rate q and steps it would actually run on its own
records). A recipe that breaks the policy is refused with the reason (`ClientRefusal`); the
coordinator records the client as dropped and the round goes on. An admitted round is charged to
the ledger *before* training (a crash still counts), and its noise and Poisson masks come from a
`NoiseSource` the client creates itself — fresh from the CSPRNG each round — so the coordinator
neither knows nor influences them. The client reports the ε its own ledger gives.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpriv.config import PrivacyConfig
from medpriv.errors import ConfigError, PrivacyError, raise_all
from medpriv.files import write_text_atomic
from medpriv.privacy.accounting import ACCOUNTANTS, default_delta, epsilon_for_history
from medpriv.privacy.randomness import NoiseSource

# Node-config keys of a SuperNode's policy (`medpriv fl supernode --max-epsilon ...`).
NODE_KEYS = {
    "max-epsilon": "max_epsilon",
    "min-noise-multiplier": "min_noise_multiplier",
    "max-grad-norm": "max_grad_norm",
    "delta": "delta",
    "accountant": "accountant",
    "reproducible-noise": "reproducible_noise",
    "noise-seed": "noise_seed",
}
LEDGER_KEY = "privacy-ledger"  # node config: the file that keeps this node's ledger across runs
NO_BUDGET = (
    "this client has no privacy budget: start its SuperNode with --max-epsilon E "
    "(node config max-epsilon) to take part in DP training"
)


class ClientRefusal(PrivacyError):
    """A client declined a round: the recipe breaks its privacy policy."""


@dataclass(frozen=True)
class ClientPolicy:
    """What a client accepts; fixed when it starts (see the module docstring).

    `max_epsilon`: the budget, checked against everything in the client's ledger plus the plan
    (None: no budget — a SuperNode then refuses DP rounds unless `require_budget` is off);
    `min_noise_multiplier`, `max_grad_norm`: limits on the recipe; `delta`: the δ of its
    accountant (None: a power of ten below 1/(10·its record count)); `reproducible_noise` with
    `noise_seed`: replayable noise (no guarantee).
    """

    max_epsilon: float | None = None
    min_noise_multiplier: float = 0.0
    max_grad_norm: float | None = None
    delta: float | None = None
    accountant: str = "prv"
    reproducible_noise: bool = False
    noise_seed: int = 0
    require_budget: bool = False

    def __post_init__(self) -> None:
        raise_all(policy_problems(self), ConfigError)

    @classmethod
    def for_simulation(
        cls, privacy: PrivacyConfig, *, delta: float, seed: int, reproducible: bool = False
    ) -> ClientPolicy:
        """The policy of an in-process client, from the run's PrivacyConfig: its budget is
        `budget` (unless over-budget runs are allowed), else the target ε the noise is
        calibrated to; an explicit noise multiplier is also the smallest it accepts; clipping at
        most `max_grad_norm`; δ the run's; replayable noise only with `reproducible_noise` (or
        for an attacker's simulation, `reproducible`), seeded by the run seed."""
        if privacy.budget is not None:
            budget = None if privacy.allow_over_budget else float(privacy.budget)
        elif privacy.noise_multiplier is None and privacy.target_epsilon is not None:
            budget = float(privacy.target_epsilon)
        else:
            budget = None
        return cls(
            max_epsilon=budget,
            min_noise_multiplier=float(privacy.noise_multiplier or 0.0),
            max_grad_norm=float(privacy.max_grad_norm),
            delta=float(delta),
            accountant=privacy.accountant,
            reproducible_noise=bool(privacy.reproducible_noise or reproducible),
            noise_seed=int(seed),
        )

    @classmethod
    def from_node_config(cls, config: Mapping[str, Any]) -> ClientPolicy:
        """A SuperNode's policy from its own --node-config (never from a message)."""
        values: dict[str, Any] = {}
        for key, name in NODE_KEYS.items():
            if key not in config or config[key] in ("", None):
                continue
            value = config[key]
            try:
                if name in ("accountant",):
                    values[name] = str(value)
                elif name == "reproducible_noise":
                    values[name] = _switch(key, value)
                elif isinstance(value, bool):
                    raise TypeError(key)
                elif name == "noise_seed":
                    values[name] = int(value)
                else:
                    values[name] = float(value)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(
                    f"invalid privacy policy in the node config: {key} = {value!r} is not "
                    f"{'true or false' if name == 'reproducible_noise' else 'a number'}"
                ) from None
        return cls(**values, require_budget=True)

    def node_config(self) -> dict[str, str | int | float | bool]:
        """The --node-config entries of this policy (only what is set)."""
        out: dict[str, str | int | float | bool] = {}
        if self.max_epsilon is not None:
            out["max-epsilon"] = float(self.max_epsilon)
        if self.min_noise_multiplier:
            out["min-noise-multiplier"] = float(self.min_noise_multiplier)
        if self.max_grad_norm is not None:
            out["max-grad-norm"] = float(self.max_grad_norm)
        if self.delta is not None:
            out["delta"] = float(self.delta)
        if self.accountant != "prv":
            out["accountant"] = self.accountant
        if self.reproducible_noise:
            out["reproducible-noise"] = True
            out["noise-seed"] = int(self.noise_seed)
        return out

    def delta_for(self, n_examples: int, federation: float | None = None) -> float:
        """This client's δ: its own (or a power of ten below 1/(10·its record count)), or the
        federation's when that is smaller — δ must stay below 1/n for the n patients of the
        whole federation, which one site cannot count; a smaller δ only makes its accounting
        stricter."""
        own = float(self.delta) if self.delta is not None else default_delta(n_examples)
        return min(own, float(federation)) if federation is not None and federation > 0 else own

    def noise_source(self, *, client: str, round_number: int) -> NoiseSource:
        """This round's source: fresh from the CSPRNG, or (only if this client was configured
        so) replayable from its own noise seed, the round and its name."""
        if not self.reproducible_noise:
            return NoiseSource.fresh()
        from medpriv.train.federated.client import client_seed

        return NoiseSource.reproducible(client_seed(self.noise_seed, round_number, client))


def _switch(key: str, value: object) -> bool:
    """A node-config on/off value: a bool, or true/false, 1/0, yes/no as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{key} must be true or false")


def _number(value: object) -> bool:
    """A finite int or float (a bool is not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def policy_problems(policy: ClientPolicy) -> list[str]:
    """Every invalid setting of a client policy, each naming its node-config key and range."""
    problems = []
    checks = (
        ("max-epsilon", policy.max_epsilon, True, lambda v: v > 0, "> 0 and finite"),
        (
            "min-noise-multiplier",
            policy.min_noise_multiplier,
            False,
            lambda v: v >= 0,
            ">= 0 and finite",
        ),
        ("max-grad-norm", policy.max_grad_norm, True, lambda v: v > 0, "> 0 and finite"),
        ("delta", policy.delta, True, lambda v: 0 < v < 1, "in (0, 1)"),
    )
    for key, value, optional, valid, described in checks:
        if value is None and optional:
            continue
        if not _number(value) or not valid(value):
            problems.append(f"{key} must be {described}, got {value!r}")
    if not isinstance(policy.accountant, str) or policy.accountant not in ACCOUNTANTS:
        problems.append(f"accountant must be one of {', '.join(ACCOUNTANTS)}")
    if not isinstance(policy.reproducible_noise, bool):
        problems.append(
            f"reproducible-noise must be true or false, got {policy.reproducible_noise!r}"
        )
    if not isinstance(policy.require_budget, bool):
        problems.append("require_budget must be true or false")
    seed = policy.noise_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        problems.append(f"noise-seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    if problems:
        problems[0] = "invalid client privacy policy: " + problems[0]
    return problems


# --- the ledger: the client's own accountant ------------------------------------------------


def _merge(entries: Sequence[tuple[float, float, int]]) -> tuple[tuple[float, float, int], ...]:
    """Entries with the same (σ, q) summed (composition is commutative; one entry per mechanism
    keeps the PRV accountant's answer identical to a single-run computation)."""
    totals: dict[tuple[float, float], int] = {}
    for sigma, q, steps in entries:
        if steps > 0:
            totals[(sigma, q)] = totals.get((sigma, q), 0) + int(steps)
    return tuple((s, q, n) for (s, q), n in sorted(totals.items()))


@functools.lru_cache(maxsize=4096)
def composed_epsilon(
    accountant: str, history: tuple[tuple[float, float, int], ...], delta: float
) -> float:
    """ε of a composition of Poisson-subsampled Gaussian mechanisms (∞ if one adds no noise)."""
    history = _merge(history)
    if any(sigma <= 0 for sigma, _, _ in history):
        return math.inf
    return epsilon_for_history(accountant=accountant, history=history, delta=delta)


@dataclass
class PrivacyLedger:
    """Every DP-SGD stretch a client's records went through: (run, σ, q, steps) entries."""

    entries: list[tuple[str, float, float, int]] = field(default_factory=list)

    def charge(self, *, run: str, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        self.entries.append((str(run), float(noise_multiplier), float(sample_rate), int(steps)))

    def history(self, run: str | None = None) -> tuple[tuple[float, float, int], ...]:
        """(σ, q, steps), merged; only `run`'s entries when given."""
        return _merge([(s, q, n) for r, s, q, n in self.entries if run is None or r == str(run)])

    def epsilon(
        self,
        *,
        accountant: str,
        delta: float,
        run: str | None = None,
        extra: Sequence[tuple[float, float, int]] = (),
    ) -> float:
        """ε of the ledger (of one run's entries, with `run`), plus `extra` planned entries."""
        return composed_epsilon(accountant, _merge([*self.history(run), *extra]), float(delta))

    def steps(self, run: str | None = None) -> int:
        return sum(n for _, _, n in self.history(run))

    def to_json(self) -> str:
        return json.dumps([list(e) for e in self.entries])

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        try:
            entries = [(str(r), float(s), float(q), int(n)) for r, s, q, n in json.loads(text)]
        except (TypeError, ValueError) as exc:
            raise PrivacyError(f"the client's privacy ledger is malformed: {exc}") from None
        return cls(entries)


@contextlib.contextmanager
def ledger_file(path: str | Path) -> Iterator[PrivacyLedger]:
    """The ledger kept in `path`, locked while in use and written back atomically on exit, even
    on an error (a node's budget holds across runs, coordinator restarts and node restarts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ledger = (
                PrivacyLedger.from_json(path.read_text(encoding="utf-8"))
                if path.exists()
                else PrivacyLedger()
            )
            try:
                yield ledger
            finally:  # also when training fails: what was charged stays charged
                write_text_atomic(ledger.to_json(), path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- admission ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """What an admitted DP round will run: σ, C, the Poisson rate and steps on this client."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    delta: float


def admit(
    policy: ClientPolicy,
    ledger: PrivacyLedger,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    steps: int,
    n_examples: int,
    run: str,
    rounds_left: int = 1,
    federation_delta: float | None = None,
) -> Admission:
    """Check a DP round against the policy and charge it to the ledger, or raise
    `ClientRefusal` naming every reason. `rounds_left` (this round included) is the plan the
    coordinator announced; the projection assumes every remaining round runs the same steps.
    `federation_delta`: the coordinator's δ for the whole federation (used when smaller)."""
    sigma, clip = float(noise_multiplier), float(max_grad_norm)
    delta = policy.delta_for(n_examples, federation_delta)
    problems = []
    if sigma < policy.min_noise_multiplier:
        problems.append(
            f"noise multiplier σ = {sigma:.4g} is below this client's minimum of "
            f"{policy.min_noise_multiplier:g}"
        )
    if policy.max_grad_norm is not None and clip > policy.max_grad_norm:
        problems.append(
            f"clipping norm C = {clip:g} is above this client's maximum of {policy.max_grad_norm:g}"
        )
    if policy.max_epsilon is None:
        if policy.require_budget:
            problems.append(NO_BUDGET)
    else:
        spent = ledger.epsilon(accountant=policy.accountant, delta=delta)
        planned = (sigma, float(sample_rate), int(steps) * max(1, int(rounds_left)))
        projected = ledger.epsilon(accountant=policy.accountant, delta=delta, extra=[planned])
        if projected > policy.max_epsilon:
            problems.append(
                f"the plan would spend ε = {projected:.4g} (δ = {delta:.2g}; {max(1, rounds_left)} "
                f"more round(s) of {steps} DP-SGD steps at σ = {sigma:.4g}, q = {sample_rate:.4g}, "
                f"on top of ε = {spent:.4g} already spent), over this client's budget of "
                f"ε = {policy.max_epsilon:g}"
            )
    if problems:
        raise ClientRefusal("; ".join(problems))
    ledger.charge(run=run, noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
    return Admission(sigma, clip, float(sample_rate), int(steps), delta)
