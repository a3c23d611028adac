"""Experiment configuration: frozen dataclasses per section, from TOML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from medpriv.data.partition import PartitionSpec
from medpriv.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where the cohort comes from (`spec`: synthetic[:N], mimic3:DIR, csv:FILE), how to read it."""

    spec: str = "synthetic"
    target: str | None = None
    positive: str | None = None
    threshold: float | None = None
    unit_column: str | None = None
    site_column: str | None = None
    sensitive: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    keep_duplicates: bool = False
    window_hours: int = 24
    label: str = "hospital"
    all_stays: bool = False
    synthetic_seed: int = 0


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of privacy units per split; the training part gets the rest."""

    val_fraction: float = 0.15
    test_fraction: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by the trainers.

    A field left as None takes the method's own recipe (`BASELINE_RECIPE`, `DP_RECIPE`): DP-SGD
    wants larger batches, fewer epochs, SGD with momentum and no dropout. A value given in the
    config or on the command line applies to every method alike.
    `calibrate` fits a Platt scaling of the network's margin on the validation patients.
    """

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (128, 64)
    dropout: float | None = None
    calibrate: bool | None = None
    patience: int | None = None
    logreg_c: float | None = None

    def resolved(self, recipe: dict[str, Any]) -> TrainConfig:
        """This config with every None field taken from `recipe` (a method's defaults)."""
        return dataclasses.replace(
            self, **{k: v for k, v in recipe.items() if getattr(self, k) is None}
        )


OPTIMIZERS = ("adam", "sgd")
ATTACK_NAMES = (
    "mia_loss",
    "mia_lira",
    "mia_rmia",
    "audit",
    "attribute",
    "fl_inversion",
    "sl_label_leakage",
    "sl_reconstruction",
)
# What `medpriv run` does with no arguments (issue 7): the comparison a hospital decides on.
DEFAULT_METHODS = (
    "baseline",
    "logreg",
    "dp-sgd@1",
    "dp-sgd@8",
    "dp-logreg@1",
    "fedavg",
    "fedavg-dp@3",
    "split-ushaped",
)
DEFAULT_ATTACKS = (
    "mia_loss",
    "mia_lira",
    "audit",
    "attribute",
    "fl_inversion",
    "sl_label_leakage",
)

# `medpriv run --quick`: the same comparison, smaller — a smoke test of the whole pipeline in
# under a minute on 2 cores. It replaces the built-in defaults; a config file and flags win.
QUICK: dict[str, dict[str, Any]] = {
    "data": {"spec": "synthetic:4000"},
    "run": {"shadow_models": 4, "bootstrap": 100, "inversion_steps": 50, "inversion_trials": 1},
    "federated": {"rounds": 8},
}


def parse_method(entry: str) -> tuple[str, float | None]:
    """`"dp-sgd@8"` -> ("dp-sgd", 8.0); `"baseline"` -> ("baseline", None).

    The `@ε` suffix pins a private method's target ε for that entry, so one run can compare
    dp-sgd at ε 1 and 8 beside fedavg-dp at ε 3.
    """
    name, sep, eps = entry.strip().partition("@")
    if not sep:
        return name, None
    try:
        value = float(eps)
    except ValueError:
        raise ConfigError(f"method {entry!r}: the part after @ must be a number (an ε)") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"method {entry!r}: ε must be a positive finite number")
    return name, value


# Logistic regression: sklearn's default inverse regularization.
LOGREG_RECIPE: dict[str, Any] = {"logreg_c": 1.0}
# Objective perturbation: the noise term is fixed by ε and the row bound, so strong
# regularization (small C) keeps it from dominating weakly curved directions; calibrated on
# validation like DP-SGD. Picked from a small grid on the two benchmark tasks.
DP_LOGREG_RECIPE: dict[str, Any] = {"logreg_c": 0.002, "calibrate": True}
# dp-logreg's default bound on each design row's L2 norm (rows are clipped to it): a fixed
# constant, like DP-SGD's clipping norm, never computed from the data.
DEFAULT_DATA_NORM = 2.0
# Non-private MLP recipe.
BASELINE_RECIPE: dict[str, Any] = {
    "epochs": 50,
    "batch_size": 256,
    "lr": 1e-3,
    "optimizer": "adam",
    "dropout": 0.1,
    "calibrate": False,
    "patience": 5,
}
# DP-SGD recipe, chosen from a small grid on the two benchmark tasks (benchmarks/dp_utility.py):
# large expected batches and few epochs keep the noise per step low; momentum SGD copes with
# noisy gradients better than Adam here; more patience, as validation AUROC is noisier; the
# output bias starts at the validation prior, and Platt scaling on validation corrects the scale
# that clipping and noise distort.
DP_RECIPE: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 512,
    "lr": 0.05,
    "optimizer": "sgd",
    "dropout": 0.0,
    "calibrate": True,
    "patience": 10,
}


@dataclass(frozen=True)
class RunConfig:
    """What to run and where to write it.

    `attacks` are run against every trained model (an empty list turns them off; the target
    then trains on the whole training split instead of a random half of the attack pool);
    `shadow_models` is LiRA's and RMIA's K; `inversion_steps` and `inversion_trials` are the
    gradient-inversion attacker's optimization budget per update and repeats per setting.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 1
    epsilons: tuple[float, ...] = ()
    out: str = "runs"
    bootstrap: int = 1000
    progress: bool = True
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    shadow_models: int = 16
    inversion_steps: int = 300
    inversion_trials: int = 2


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential-privacy settings for the private methods (ignored by the others).

    `target_epsilon` calibrates the noise for the planned epochs unless `noise_multiplier` is
    given; `delta` defaults to a power of ten below 1/(10 n_units); `unit_policy` says how
    several records per privacy unit are handled: keep one per unit, or group privacy.
    `data_norm` bounds each design row's L2 norm for `dp-logreg`, its constant (intercept)
    column included (rows are clipped to it;
    default `DEFAULT_DATA_NORM`, a constant fixed in advance, never computed from the data).
    `reproducible_noise` draws the noise and Poisson masks from the run seed instead of the OS
    CSPRNG: for debugging and tests only; such a model carries no guarantee and says so.
    """

    target_epsilon: float | None = 1.0
    noise_multiplier: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    engine: str = "fast"
    budget: float | None = None
    allow_over_budget: bool = False
    unit_policy: str = "one-per-unit"
    data_norm: float | None = None
    reproducible_noise: bool = False


FL_STRATEGIES = ("fedavg", "fedprox", "fedadam")
FL_ENGINES = ("inprocess",)
# Local training of federated clients: plain SGD with momentum, a fresh optimizer each round.
FEDAVG_RECIPE: dict[str, Any] = {
    "epochs": 1,  # local epochs per round
    "batch_size": 64,
    "lr": 0.05,
    "optimizer": "sgd",
    "dropout": 0.0,
    "calibrate": False,
    "patience": 1,  # unused: federated runs keep the last round
}

# DP-SGD inside each client (fedavg-dp): as DP_RECIPE, smaller expected batches (clients are small).
FEDAVG_DP_RECIPE: dict[str, Any] = {**FEDAVG_RECIPE, "batch_size": 128, "calibrate": True}
# Client-level DP (fedavg-cdp): plain local training; the server's noise needs calibration after.
FEDAVG_CDP_RECIPE: dict[str, Any] = {**FEDAVG_RECIPE, "calibrate": True}


@dataclass(frozen=True)
class FederatedConfig:
    """Federated learning: how the training set becomes clients, and the rounds.

    `partition`: `site` (one client per site), `iid:K` or `dirichlet:K:ALPHA`. Each round,
    max(`min_clients`, ⌈`fraction`·N⌉) clients train `train.epochs` local epochs (the federated
    recipe's default is 1) and the server aggregates with `strategy`; a round with fewer than
    `min_clients` usable updates keeps the previous global model. `proximal_mu` is FedProx's μ,
    `server_lr` FedAdam's η. Clients below `min_client_size` records are merged or dropped.
    """

    partition: str = "site"
    rounds: int = 20
    fraction: float = 1.0
    min_clients: int = 2
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_lr: float = 0.01
    min_client_size: int = 20
    engine: str = "inprocess"


# Split learning: the baseline's recipe without dropout (the server's part has none either).
SPLIT_RECIPE: dict[str, Any] = {**BASELINE_RECIPE, "dropout": 0.0}


@dataclass(frozen=True)
class SplitLearningConfig:
    """Split learning: the client keeps the first `cut` hidden layers; `clients` deals the
    training set into hospitals (`site`, `iid:K`, `dirichlet:K:ALPHA`; None = one client, but
    `splitfed` uses `site`) that train in turn (in parallel for splitfed); `server` is the
    address (HOST:PORT) of a `medpriv sl server`, or None to run the server in this process;
    `ca_certificate` the PEM file that signs its TLS certificate (None = plain TCP); `noise` the
    σ of Gaussian noise added to the activations sent (a defense, in training);
    `gradient_noise` (U-shaped) the σ of Gaussian noise added to each gradient row sent back to
    the server, relative to the batch's mean row norm (a defense against label leakage);
    `nopeek` the weight α of the NoPeek loss, α·dCor(inputs, activations), that makes the
    activations carry less about the inputs (a defense against reconstruction); `client_dp`
    trains the client's layers with DP-SGD for [privacy]'s target ε (the composed model is still
    not DP: the activations sent are not protected). The server's
    shared token comes from $MEDPRIV_SL_TOKEN, never from a config file (configs are saved
    with the results)."""

    cut: int = 1
    clients: str | None = None
    server: str | None = None
    ca_certificate: str | None = None
    noise: float = 0.0
    gradient_noise: float = 0.0
    nopeek: float = 0.0
    client_dp: bool = False


def split_learning_problems(s: SplitLearningConfig) -> list[str]:
    problems = []
    if s.cut < 1:
        problems.append("split_learning.cut must be >= 1")
    if min(s.noise, s.gradient_noise, s.nopeek) < 0:
        problems.append("split_learning.noise, gradient_noise and nopeek must be >= 0")
    if s.clients is not None:
        try:
            PartitionSpec.parse(s.clients)
        except ConfigError as exc:
            problems.append(f"split_learning.clients: {exc}")
    if s.server is not None and s.server.rpartition(":")[2].isdigit() is False:
        problems.append("split_learning.server must be HOST:PORT")
    return problems


def federated_problems(f: FederatedConfig) -> list[str]:
    """Range checks of the [federated] section."""
    problems = []
    if f.rounds < 1:
        problems.append("federated.rounds must be >= 1")
    if not 0 < f.fraction <= 1:
        problems.append("federated.fraction must be in (0, 1]")
    if f.min_clients < 1:
        problems.append("federated.min_clients must be >= 1")
    if f.strategy not in FL_STRATEGIES:
        problems.append(f"federated.strategy must be one of {', '.join(FL_STRATEGIES)}")
    if f.engine not in FL_ENGINES:
        problems.append(f"federated.engine must be one of {', '.join(FL_ENGINES)}")
    if f.proximal_mu < 0 or f.server_lr <= 0:
        problems.append("federated.proximal_mu must be >= 0 and federated.server_lr > 0")
    if f.min_client_size < 1:
        problems.append("federated.min_client_size must be >= 1")
    try:
        PartitionSpec.parse(f.partition)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    run: RunConfig = field(default_factory=RunConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    split_learning: SplitLearningConfig = field(default_factory=SplitLearningConfig)

    def validate(self) -> ExperimentConfig:
        """Check value ranges, gathering every problem into one error."""
        problems = []
        s, t, r = self.split, self.train, self.run
        if not (0 < s.val_fraction < 1 and 0 < s.test_fraction < 1):
            problems.append("split fractions must lie strictly between 0 and 1")
        elif s.val_fraction + s.test_fraction >= 0.9:
            problems.append("val_fraction + test_fraction must leave at least 10% for training")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(t, name) is not None and getattr(t, name) < 1:
                problems.append(f"train.{name} must be >= 1")
        if t.lr is not None and t.lr <= 0:
            problems.append("train.lr must be > 0")
        if t.logreg_c is not None and t.logreg_c <= 0:
            problems.append("train.logreg_c must be > 0")
        if t.optimizer is not None and t.optimizer not in OPTIMIZERS:
            problems.append(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}")
        if not 0 <= t.momentum < 1:
            problems.append("train.momentum must be in [0, 1)")
        if not t.hidden or any(h < 1 for h in t.hidden):
            problems.append("train.hidden must list positive layer widths, e.g. [128, 64]")
        if t.dropout is not None and not 0 <= t.dropout < 1:
            problems.append("train.dropout must be in [0, 1)")
        if r.seeds < 1:
            problems.append("run.seeds must be >= 1")
        unknown = [a for a in r.attacks if a not in ATTACK_NAMES]
        if unknown:
            problems.append(
                f"unknown attacks {unknown}; choose from {', '.join(ATTACK_NAMES)} (or none)"
            )
        if r.shadow_models < 2:
            problems.append("run.shadow_models must be >= 2")
        if r.inversion_steps < 1 or r.inversion_trials < 1:
            problems.append("run.inversion_steps and run.inversion_trials must be >= 1")
        if not r.methods:
            problems.append("run.methods is empty; name at least one method")
        for entry in r.methods:
            try:
                parse_method(entry)
            except ConfigError as exc:
                problems.append(str(exc))
        if self.data.window_hours not in (24, 48):
            problems.append("data.window_hours must be 24 or 48")
        problems += privacy_problems(self.privacy, self.run.epsilons)
        problems += federated_problems(self.federated)
        problems += split_learning_problems(self.split_learning)
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


SECTION_TYPES = {
    "data": DataConfig,
    "split": SplitConfig,
    "train": TrainConfig,
    "privacy": PrivacyConfig,
    "run": RunConfig,
    "federated": FederatedConfig,
    "split_learning": SplitLearningConfig,
}


def privacy_problems(p: PrivacyConfig, epsilons: tuple[float, ...]) -> list[str]:
    """Range checks of the [privacy] section and the ε sweep."""
    problems = []
    if p.target_epsilon is None and p.noise_multiplier is None and not epsilons:
        problems.append("give privacy.target_epsilon (--target-epsilon) or --noise-multiplier")
    if p.target_epsilon is not None and p.target_epsilon <= 0:
        problems.append("privacy.target_epsilon must be > 0")
    if any(e <= 0 for e in epsilons):
        problems.append("every value of --epsilons must be > 0")
    if p.noise_multiplier is not None and p.noise_multiplier <= 0:
        problems.append("privacy.noise_multiplier must be > 0")
    if p.delta is not None and not 0 < p.delta < 1:
        problems.append("privacy.delta must lie strictly between 0 and 1")
    if p.max_grad_norm <= 0:
        problems.append("privacy.max_grad_norm must be > 0")
    if p.accountant not in ("prv", "rdp"):
        problems.append(f"privacy.accountant must be 'prv' or 'rdp', got {p.accountant!r}")
    if p.engine not in ("fast", "opacus"):
        problems.append(f"privacy.engine must be 'fast' or 'opacus', got {p.engine!r}")
    if p.data_norm is not None and p.data_norm <= 0:
        problems.append("privacy.data_norm must be > 0")
    if p.budget is not None and p.budget <= 0:
        problems.append("privacy.budget must be > 0")
    if p.unit_policy not in ("one-per-unit", "group"):
        problems.append(
            f"privacy.unit_policy must be 'one-per-unit' or 'group', got {p.unit_policy!r}"
        )
    return problems


SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _scalar(kind: str, value: Any) -> Any:
    """`value` as the scalar type named `kind`, or a TypeError."""
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError(kind)


def _coerce(section: type, key: str, value: Any) -> Any:
    """Convert a TOML/CLI value to the field's declared type; a wrong type is an error.

    Comma-separated strings become tuples; `X | None` fields accept None.
    """
    declared = next(f for f in fields(section) if f.name == key).type
    kind = str(declared).replace(" | None", "")
    try:
        if value is None and "None" in str(declared):
            return None
        if kind.startswith("tuple["):
            item = kind[len("tuple[") :].split(",")[0].strip()
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise TypeError(kind)
            return tuple(
                _scalar(
                    item,
                    float(v)
                    if item == "float" and isinstance(v, str)
                    else int(v)
                    if item == "int" and isinstance(v, str)
                    else v,
                )
                for v in value
            )
        return _scalar(kind, value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"[{section.__name__}] {key} = {value!r} has the wrong type (expected {declared})"
        ) from None


def build_config(values: dict[str, dict[str, Any]]) -> ExperimentConfig:
    """An ExperimentConfig from nested section dicts; unknown sections or keys are errors."""
    problems, sections = [], {}
    for name, body in values.items():
        if name not in SECTION_TYPES:
            problems.append(f"unknown config section [{name}]; valid: {sorted(SECTION_TYPES)}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{name} must be a [{name}] section, not a single value")
            continue
        cls = SECTION_TYPES[name]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            problems.append(f"unknown keys in [{name}]: {unknown}; valid: {sorted(known)}")
            continue
        sections[name] = cls(**{k: _coerce(cls, k, v) for k, v in body.items()})
    if problems:
        raise ConfigError("; ".join(problems))
    return ExperimentConfig(**sections).validate()


def load_config(
    path: Path | None,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    base: dict[str, dict[str, Any]] | None = None,
) -> ExperimentConfig:
    """Read a TOML file (optional) and apply CLI overrides (None values are ignored).

    `base` (e.g. `QUICK`) replaces built-in defaults: the file and the overrides win over it.
    """
    values: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (base or {}).items()}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            from_file = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from None
        for section, body in from_file.items():
            if isinstance(body, dict):
                values.setdefault(section, {}).update(body)
            else:
                values[section] = body
    for section, body in (overrides or {}).items():
        for key, value in body.items():
            if value is not None:
                values.setdefault(section, {})[key] = value
    return build_config(values)


def to_toml(config: ExperimentConfig) -> str:
    """The resolved config as TOML (None values are omitted)."""
    lines = []
    for section, body in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
