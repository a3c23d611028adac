"""Privacy accounting and statements for federated learning.

* Sample-level DP (`fedavg-dp`): every client runs DP-SGD with Poisson sampling on its own
  patients, with noise it draws itself, under a policy it was started with, and keeps its own
  accountant (`medpriv.train.federated.policy`). The coordinator calibrates σ for the target ε
  and sends the recipe; it cannot set a client's noise. The aggregation is post-processing, so a
  patient's ε is the composition over the clients holding that patient's records: in process
  (where the partition is known) it is computed per patient from the clients' own ledgers and
  the largest over patients is reported; in a deployment, where nothing can check which
  hospitals treated a patient, it is the largest ε the clients reported, and the statement names
  the one-site-per-patient assumption it rests on.
* Client-level DP (`fedavg-cdp`, DP-FedAvg): the coordinator clips each site's update and adds
  Gaussian noise from its own fresh source. Sampling amplification (q = fraction) is claimed
  only when each site's participation is drawn from that CSPRNG source and nothing about who
  took part (names, counts, sizes, bytes, losses) is published; otherwise q = 1. Unit = site.
  The coordinator is trusted: it sees every raw update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from medpriv.config import PrivacyConfig
from medpriv.errors import PrivacyError
from medpriv.privacy.accounting import (
    calibrate_noise,
    check_delta,
    default_delta,
    epsilon_spent,
)
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.dp_recipe import fedavg_dp_recipe
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.policy import ClientPolicy, PrivacyLedger, composed_epsilon
from medpriv.train.federated.strategy import DPFedAvg, FedAdam, FedAvg

# The largest default δ of client-level DP, whatever the number of sites (README: δ below
# 1/(number of patients); 1/(number of sites) would be far too loose).
CDP_MAX_DEFAULT_DELTA = 1e-5
ONE_SITE_CAVEAT = (
    "ε per patient assumes each patient's records are at one site (parallel composition over "
    "sites): a patient treated at k sites spends the composition of those k sites' ε (up to about "
    "k times as much), and nothing across hospitals can check this"
)
NO_LOSSES = "no per-site training loss is published"


@lru_cache(maxsize=4096)
def _epsilon(accountant: str, sigma: float, q: float, steps: int, delta: float) -> float:
    return epsilon_spent(
        accountant=accountant, noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta
    )


@lru_cache(maxsize=1024)
def _sigma(accountant: str, target: float, q: float, steps: int, delta: float) -> float:
    """σ for a target ε; clients of equal size share one calibration (each takes ~1 s)."""
    return calibrate_noise(
        target_epsilon=target, delta=delta, sample_rate=q, steps=steps, accountant=accountant
    )


def _target(privacy: PrivacyConfig) -> float:
    if privacy.target_epsilon is None:
        raise PrivacyError("give a target ε (--target-epsilon) or --noise-multiplier")
    return float(privacy.target_epsilon)


def _validation(unit: str) -> str:
    return (
        f"validation {unit}s held by the coordinator (preprocessing statistics, initial output "
        "bias, choice of the best round, calibration)"
    )


RULE_FIELDS = ("batch_size", "epochs", "lr", "hidden")  # what the client rule may set


def with_client_rule(
    recipe: LocalRecipe,
    sizes: Mapping[str, int],
    *,
    in_features: int,
    privacy: PrivacyConfig,
    rounds: int,
    per_round: int,
    n_units: int,
    unset: Collection[str],
) -> tuple[LocalRecipe, dict[str, Any]]:
    """fedavg-dp's client recipe from public quantities (`medpriv.train.dp_recipe`), the same
    in process and on Flower: the rule's fields where the user left them unset (`unset`), and
    the record of the rule for results.json ({fields, reason, noise_ratio, set_by_user})."""
    rule = fedavg_dp_recipe(
        sizes=sizes,
        in_features=in_features,
        epsilon=privacy.target_epsilon,
        delta=privacy.delta if privacy.delta is not None else default_delta(n_units),
        noise_multiplier=privacy.noise_multiplier,
        accountant=privacy.accountant,
        rounds=rounds,
        clients_per_round=per_round,
        local_steps=None if "epochs" in unset else recipe.epochs,
        batch_given="batch_size" not in unset,
    )
    chosen = {key: value for key, value in rule.fields.items() if key in unset}
    record = {**rule.to_dict(), "set_by_user": sorted(set(rule.fields) - set(chosen))}
    return dataclasses.replace(recipe, **chosen), record


@dataclass
class SampleLevelAccountant:
    """fedavg-dp: σ for the target ε (the largest any client needs when it takes part in every
    planned round), and the ε of the result from the clients' own accountants.

    In process, `ledgers` are the simulated clients' own ledgers and `unit_sites` the sets of
    clients the training units appear in (with how many units each): ε is composed per set.
    In a deployment both are None and ε is the largest the clients reported (`client_privacy`
    in the round records), or, for a client that reported none, the coordinator's own count.
    """

    sizes: Mapping[str, int]
    recipe: LocalRecipe
    rounds: int
    privacy: PrivacyConfig
    n_units: int
    unit: str = "patient"
    ledgers: Mapping[str, PrivacyLedger] | None = None
    unit_sites: Mapping[frozenset[str], int] | None = None
    noise_kind: str = "csprng"  # in process: the simulated clients' noise
    sigma: float = field(init=False)
    delta: float = field(init=False)
    steps: dict[str, int] = field(init=False)
    reports: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.delta = (
            self.privacy.delta if self.privacy.delta is not None else default_delta(self.n_units)
        )
        check_delta(self.delta, self.n_units)
        if self.privacy.noise_multiplier is not None:
            self.sigma = float(self.privacy.noise_multiplier)
        else:
            target = _target(self.privacy)
            self.sigma = max(
                _sigma(
                    self.privacy.accountant,
                    target,
                    self._rate(name),
                    self.rounds * self._per_round(name),
                    self.delta,
                )
                for name in self.sizes
            )
        self.steps = {name: 0 for name in self.sizes}
        self.reports = {}

    @property
    def in_process(self) -> bool:
        return self.ledgers is not None

    def _rate(self, name: str) -> float:
        return self.recipe.sampling(self.sizes[name])[0]

    def _per_round(self, name: str) -> int:
        return self.recipe.epochs * self.recipe.sampling(self.sizes[name])[1]

    def private_recipe(self) -> LocalRecipe:
        return dataclasses.replace(
            self.recipe,
            noise_multiplier=self.sigma,
            max_grad_norm=self.privacy.max_grad_norm,
            dropout=0.0,
            proximal_mu=0.0,
        )

    def client_policy(self, *, seed: int, reproducible: bool = False) -> ClientPolicy:
        """The policy of an in-process client (see `ClientPolicy.for_simulation`)."""
        return ClientPolicy.for_simulation(
            self.privacy, delta=self.delta, seed=seed, reproducible=reproducible
        )

    def after_round(self, record: dict, *, report: bool = True) -> dict[str, float]:
        """Take in the clients' reports of the round; with `report`, the ε so far."""
        for name, reported in (record.get("client_privacy") or {}).items():
            self.reports[name] = dict(reported)
        for name in record.get("client_sizes") or {}:
            if name in self.steps:
                self.steps[name] += self._per_round(name)
        return {"epsilon": self.epsilon()} if report else {}

    # --- ε ----------------------------------------------------------------------------------

    def _groups(self) -> dict[str, tuple[frozenset[str], float]]:
        """label -> (the clients a group of units spans, its ε)."""
        out: dict[str, tuple[frozenset[str], float]] = {}
        if self.ledgers is not None:
            groups = self.unit_sites or {frozenset([name]): 1 for name in self.ledgers}
            for sites in groups:
                history = tuple(e for s in sorted(sites) for e in self.ledgers[s].history())
                epsilon = composed_epsilon(self.privacy.accountant, history, self.delta)
                out[" + ".join(sorted(sites))] = (sites, epsilon)
            return out
        for name in self.sizes:
            if name in self.reports:
                epsilon = float(self.reports[name]["epsilon"])
            else:  # no report from this client: the coordinator's own count of its steps
                epsilon = _epsilon(
                    self.privacy.accountant,
                    self.sigma,
                    self._rate(name),
                    self.steps[name],
                    self.delta,
                )
            out[name] = (frozenset([name]), epsilon)
        return out

    def client_epsilons(self) -> dict[str, float]:
        """Each client's own ε for this run (in process: its ledger's)."""
        if self.ledgers is not None:
            return {
                name: ledger.epsilon(accountant=self.privacy.accountant, delta=self.delta)
                for name, ledger in self.ledgers.items()
            }
        return {name: epsilon for name, (_, epsilon) in self._groups().items()}

    def epsilon(self) -> float:
        return max((e for _, e in self._groups().values()), default=0.0)

    def _delta(self) -> float:
        reported = [float(r["delta"]) for r in self.reports.values() if r.get("delta")]
        return max([self.delta, *reported]) if not self.in_process else self.delta

    def _noise(self) -> str:
        if self.in_process:
            return self.noise_kind
        kinds = {r.get("noise") for r in self.reports.values()}
        return "reproducible" if "reproducible" in kinds else "csprng"

    def spent(self, caveats: list[str]) -> PrivacySpent:
        groups = self._groups()
        label = max(groups, key=lambda k: groups[k][1]) if groups else None
        epsilon = groups[label][1] if label is not None else 0.0
        sites = groups[label][0] if label is not None else frozenset()
        steps: int | None
        rate: float | None
        if self.ledgers is not None:
            steps = sum(self.ledgers[s].steps() for s in sites)
        else:
            steps = sum(self.steps[s] for s in sites)
        rate = self._rate(next(iter(sites))) if len(sites) == 1 else None
        unit = self.unit
        if self.in_process:
            several = [s for s in (self.unit_sites or {}) if len(s) > 1]
            where = (
                f"{sum(self.unit_sites[s] for s in several):,} {unit}s have records at several "
                "clients and are composed over them"
                if several
                else f"every {unit}'s records are at one client"
            )
            mechanism = (
                "DP-SGD on every client, each drawing its own noise and Poisson masks and "
                f"enforcing its own privacy policy; ε per {unit} composes the ε of the clients "
                f"holding that {unit}'s records ({where}), largest over {unit}s: {label}"
            )
            extra: tuple[str, ...] = ()
            trusts = (
                "each client's own machine, which reads its raw records and runs DP-SGD on them; "
                "the coordinator sees only noised updates and cannot set a client's noise",
            )
        else:
            mechanism = (
                "DP-SGD on every client, each drawing its own noise and Poisson masks, enforcing "
                "its own privacy policy and keeping its own accountant; ε is the largest the "
                f"clients reported: {label}"
            )
            extra = (ONE_SITE_CAVEAT,)
            trusts = (
                "each hospital's own machine, which reads its raw records and runs DP-SGD on "
                "them; the coordinator sees only noised updates and cannot set a client's noise",
                "each client's report of the ε its own accountant spent",
            )
        return PrivacySpent(
            epsilon=epsilon,
            delta=self._delta(),
            accountant=self.privacy.accountant,
            sampling="poisson",
            unit=unit,
            level="sample",
            clipping_norm=self.privacy.max_grad_norm,
            noise_multiplier=self.sigma,
            steps=steps,
            sample_rate=rate,
            mechanism=mechanism,
            noise=self._noise(),
            caveats=(*caveats, *extra),
            public=(
                f"each client's number of training {unit}s, which sets its sampling rate q, its "
                "FedAvg weight and the clients' recipe (batch size, model)",
                f"the number of training {unit}s ({self.n_units:,}), which sets δ",
            ),
            trusts=trusts,
            unprotected=(_validation(unit), "the exact counts in the dataset card"),
        )


@dataclass
class ClientLevelAccountant:
    """DP-FedAvg: σ for the target ε over `rounds` rounds, the coordinator's noise source (for
    the server's noise and each site's participation), and what may be published.

    q = `fraction` is accounted only when participation is hidden: `fraction` < 1, drawn from a
    fresh CSPRNG source, and not published (`publish_participants` False); otherwise q = 1.
    """

    n_clients: int
    fraction: float
    rounds: int
    privacy: PrivacyConfig
    n_units: int
    noise: NoiseSource
    publish_participants: bool = False
    # An attacker's copy of the training (shadow models): replayable draws, but the same plan
    # and accounting as the model it imitates.
    simulation: bool = False
    data_unit: str = "patient"  # the dataset's privacy unit (validation patients are not covered)
    sigma: float = field(init=False)
    delta: float = field(init=False)
    rounds_done: int = 0

    def __post_init__(self) -> None:
        self.delta = (
            self.privacy.delta
            if self.privacy.delta is not None
            else min(CDP_MAX_DEFAULT_DELTA, default_delta(self.n_units))
        )
        check_delta(self.delta, self.n_units)
        if self.privacy.noise_multiplier is not None:
            self.sigma = float(self.privacy.noise_multiplier)
        else:
            self.sigma = _sigma(
                self.privacy.accountant,
                _target(self.privacy),
                self.sample_rate,
                self.rounds,
                self.delta,
            )

    @property
    def sampled(self) -> bool:
        return self.fraction < 1

    @property
    def hidden(self) -> bool:
        """Participation drawn from the CSPRNG and never published: amplification holds."""
        return (
            self.sampled
            and (self.noise.guaranteed or self.simulation)
            and not self.publish_participants
        )

    @property
    def sample_rate(self) -> float:
        """The q the accountant uses."""
        return float(self.fraction) if self.hidden else 1.0

    def participation(self) -> NoiseSource | None:
        """Where each round's participation is drawn from (None: every site, every round)."""
        return self.noise if self.sampled else None

    def strategy(self, inner: FedAvg | FedAdam | None = None) -> DPFedAvg:
        """DP-FedAvg's clipped, noised mean, handed to `inner` (FedAvg by default)."""
        return DPFedAvg(
            clip=self.privacy.max_grad_norm,
            noise_multiplier=self.sigma,
            expected_clients=self.fraction * self.n_clients,
            noise=self.noise,
            inner=inner or FedAvg(),
        )

    def redact(self, record: dict[str, Any]) -> dict[str, Any]:
        """The round record as it may be published: no per-site loss; with hidden
        participation, nothing about who took part (names, count, sizes, bytes)."""
        out = {k: v for k, v in record.items() if k != "client_train_loss"}
        if self.hidden:
            for key in ("clients", "client_sizes", "dropped", "bytes_up", "bytes_down"):
                out[key] = None
            out["participation"] = "withheld"
        return out

    def expected_bytes(self, model_bytes: int) -> int:
        """The expected bytes of a round each way (what is published when participation is
        hidden: exact counts would reveal it)."""
        return round(self.fraction * self.n_clients * model_bytes)

    def after_round(self, record: dict, *, report: bool = True) -> dict[str, float]:
        self.rounds_done += 1
        return {"epsilon": self.epsilon()} if report else {}

    def epsilon(self) -> float:
        return _epsilon(
            self.privacy.accountant, self.sigma, self.sample_rate, self.rounds_done, self.delta
        )

    def participation_caveat(self) -> str:
        if not self.sampled:
            return "every site takes part in every round (q = 1)"
        if self.hidden:
            return (
                "each site takes part in a round independently with probability "
                f"{self.fraction:g}, drawn from the coordinator's CSPRNG; who took part (names, "
                "counts, sizes, bytes) is never published, so ε is amplified by this sampling "
                f"(q = {self.fraction:g})"
            )
        why = (
            "is published in the history"
            if self.publish_participants
            else "can be replayed from the run seed (reproducible noise)"
        )
        return (
            f"each site takes part in a round with probability {self.fraction:g}, but who took "
            f"part {why}, so ε is accounted without amplification by sampling (q = 1)"
        )

    def spent(self, caveats: list[str]) -> PrivacySpent:
        unprotected = [
            "each site's exact record count (params.clients)",
            _validation(self.data_unit),
            "the exact counts in the dataset card",
        ]
        if self.sampled and not self.hidden:
            unprotected.insert(0, "which sites took part in each round")
        return PrivacySpent(
            epsilon=self.epsilon(),
            delta=self.delta,
            accountant=self.privacy.accountant,
            sampling="poisson",
            unit="site",
            level="client",
            clipping_norm=self.privacy.max_grad_norm,
            noise_multiplier=self.sigma,
            steps=self.rounds_done,
            sample_rate=self.sample_rate,
            mechanism=(
                f"DP-FedAvg over {self.n_clients} sites: each site's update clipped and Gaussian "
                "noise added at the server from its own CSPRNG source; steps are rounds, q the "
                "accounted site sampling rate"
            ),
            noise=self.noise.kind,
            caveats=(*caveats, self.participation_caveat(), NO_LOSSES),
            public=(
                f"the list of sites and their number ({self.n_clients}), which sets the expected "
                "number of sites per round",
            ),
            trusts=(
                "the coordinator, which receives every site's raw model update in the clear (the "
                "noise is added at the server; no secure aggregation) and knows which sites take "
                "part in each round",
            ),
            unprotected=tuple(unprotected),
        )


def unit_site_groups(units: Mapping[str, Any]) -> dict[frozenset[str], int]:
    """From client name -> its units' ids: each set of clients that some units span, with how
    many units span exactly that set."""
    where: dict[Any, set[str]] = {}
    for name, ids in units.items():
        for unit in set(ids.tolist() if hasattr(ids, "tolist") else ids):
            where.setdefault(unit, set()).add(name)
    groups: dict[frozenset[str], int] = {}
    for sites in where.values():
        key = frozenset(sites)
        groups[key] = groups.get(key, 0) + 1
    return groups


def refusal_caveats(history: list[dict[str, Any]]) -> list[str]:
    """A caveat when clients refused rounds under their own privacy policies."""
    reasons = [
        reason
        for record in history
        for reason in (record.get("dropped") or {}).values()
        if str(reason).startswith("refused")
    ]
    if not reasons:
        return []
    return [
        f"{len(reasons)} client round(s) were refused by the clients' own privacy policies "
        "(their updates are not in the model); see the history"
    ]
