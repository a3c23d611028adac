"""Experiment configuration: frozen dataclasses per section, from TOML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from medpriv.attacks.catalog import ATTACK_NAMES, DEFAULT_ATTACKS
from medpriv.data.partition import PartitionSpec
from medpriv.errors import ConfigError
from medpriv.untrusted import printable


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
    member_column: str | None = None  # CSV: the records a --fitted model was trained on


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of privacy units per split; the training part gets the rest. A test split with
    fewer than `medpriv.data.splits.MIN_PER_CLASS` positive or negative records, or any split
    without both classes, is refused."""

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
    hidden: tuple[int, ...] | None = None
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
    where = f"run.methods (--methods) entry {entry.strip()!r}"
    try:
        value = float(eps)
    except ValueError:
        raise ConfigError(f"{where}: the part after @ must be a number (an ε)") from None
    if not (value > 0 and value <= MAX_EPSILON):
        raise ConfigError(f"{where}: ε must be in (0, {MAX_EPSILON:g}]")
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
# The MLP's hidden widths unless a method's recipe or the user says otherwise (in→128→64→2).
DEFAULT_HIDDEN = (128, 64)
# Non-private MLP recipe.
BASELINE_RECIPE: dict[str, Any] = {
    "epochs": 50,
    "batch_size": 256,
    "lr": 1e-3,
    "optimizer": "adam",
    "dropout": 0.1,
    "calibrate": False,
    "patience": 5,
    "hidden": DEFAULT_HIDDEN,
}
# DP-SGD's fallback recipe. What dp-sgd actually trains with is set per run by the rule in
# `medpriv.train.dp_recipe` from public quantities (n, ε): these values fill only what that rule
# leaves unset (and serve --noise-multiplier runs without a target ε the same way). Momentum SGD
# copes with noisy gradients better than Adam; the output bias starts at the validation prior,
# and Platt scaling on validation corrects the scale that clipping and noise distort.
DP_RECIPE: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 512,
    "lr": 0.05,
    "optimizer": "sgd",
    "dropout": 0.0,
    "calibrate": True,
    "patience": 10,
    "hidden": DEFAULT_HIDDEN,
}


# The most units of each side (members, non-members) whose records the membership attacks score
# (`medpriv.attacks.runner.AttackPool`). 20,000 non-members resolve a TPR at FPR 10⁻³ with 20 false
# positives; larger tables are attacked on a uniform random sample of units per side while the
# reference models still train on every pool unit (issue 17: the attack's cost bounded on large
# tables).
MAX_ATTACKED_UNITS = 20_000
MIN_GROUP_UNITS = 50  # a report subgroup with fewer privacy units is suppressed


@dataclass(frozen=True)
class RunConfig:
    """What to run and where to write it.

    `attacks` are run against every trained model (an empty list turns them off; the models and
    their utility are the same either way: attacks use the training patients as members and the
    test patients as non-members);
    `shadow_models` is LiRA's and RMIA's K; `inversion_steps` and `inversion_trials` are the
    gradient-inversion attacker's optimization budget per update and repeats per setting;
    `device` (auto, cpu, cuda) is where the multi-run audit's stacked runs are drawn (trainers
    run on the CPU); `model` (package.module:factory) is the user's scikit-learn estimator, run
    as the method `model`, taking medpriv's design matrix or, with `model_input = "table"`, the
    feature table (its own preprocessing); `model` may instead name a `.skops` file whose
    estimator is refitted, read only if every type in it is trusted by skops or listed in
    `trusted_types` (`medpriv.train.model_file`); `fitted` attacks that file's fitted weights as
    they are (its training patients named by `data.member_column`); `min_group_units` is the
    fewest privacy units a subgroup of the report's "who pays" section needs to be shown
    (smaller groups are suppressed); `attack_units` is the most units of each side (members,
    non-members) the membership and attribute attacks score — a larger side is sampled
    uniformly by unit, the reference models still train on every pool unit.
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
    device: str = "auto"
    model: str | None = None
    model_input: str = "design"
    trusted_types: tuple[str, ...] = ()
    fitted: bool = False
    min_group_units: int = MIN_GROUP_UNITS
    attack_units: int = MAX_ATTACKED_UNITS


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
    `tune = "private"` selects dp-sgd's learning rate and model on validation patients by
    private selection (`medpriv.train.tuning`), `tune_trials` trials expected, its cost in ε.
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
    tune: str = "none"
    tune_trials: float = 10.0


TUNING = ("none", "private")
FL_STRATEGIES = ("fedavg", "fedprox", "fedadam")
FL_ENGINES = ("inprocess", "flower")  # flower: a local deployment (medpriv run --engine)
MODEL_INPUTS = ("design", "table")  # what --model's estimator takes (`medpriv.train.estimator`)
DEVICES = ("auto", "cpu", "cuda")  # `medpriv.device`
# Local training of federated clients: plain SGD with momentum, a fresh optimizer each round.
FEDAVG_RECIPE: dict[str, Any] = {
    "epochs": 1,  # local epochs per round
    "batch_size": 64,
    "lr": 0.05,
    "optimizer": "sgd",
    "dropout": 0.0,
    "calibrate": False,
    "patience": 1,  # unused: federated runs keep the last round
    "hidden": DEFAULT_HIDDEN,
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


MAX_WHOLE = 2**31 - 1  # whole-number settings above this overflow tensor shapes and indices
# A hidden layer of 4,096 already holds 16.8M weights after another of that width (67 MB, more
# with optimizer state and 16 stacked shadow copies); tabular models use tens to hundreds. A
# 65,536-wide layer asked for 17 GB and stalled the machine.
MAX_LAYER_WIDTH = 4_096
MAX_HIDDEN_LAYERS = 16  # deeper tabular MLPs are a typo, not a design (each layer costs memory)
# ε above 100 promises nothing (e^100 ≈ 10^43 times the odds) and the PRV accountant's noise
# calibration slows from seconds to minutes above ε ≈ 50 (measured here); ε = 1e308 never ended.
MAX_EPSILON = 100.0
# σ = 10^4 already buries every clipped gradient under noise 10^4 times its norm (nothing is
# learned); σ = 1e300 overflowed the RDP accountant.
MAX_NOISE_MULTIPLIER = 1e4
# Opacus's PRV accountant refuses δ below about 1e-13 (floating-point error dominates; 1e-14
# failed here); 1e-12 is still far below 1/n for any cohort of fewer than 10^11 units.
MIN_DELTA = 1e-12
# LiRA's authors use up to 256 shadow models; beyond 1,024 the estimate has long converged and
# the stacked copies outgrow memory.
MAX_SHADOW_MODELS = 1_024
MAX_TUNE_TRIALS = 100.0  # expected trials of a private selection


@dataclass(frozen=True)
class Range:
    """The valid values of one numeric setting: finite, between `low` and `high` (each
    excluded when `*_open`); `flag` is its `medpriv run` option. Whole-number settings are
    ints by type (`_coerce`), so a range only bounds them."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    flag: str | None = None

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """E.g. '> 0 and finite', 'in (0, 1)', '>= 1 and at most 2147483647', 'finite'."""
        low, high = _plain(self.low), _plain(self.high)
        if self.low is not None and self.high is not None and (self.low_open or self.high_open):
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{low}, {high}{right}"
        if self.low is not None and self.high is not None:
            return f">= {low} and at most {high}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low} and finite"
        return "finite"


def _plain(value: float | None) -> str:
    return "" if value is None else f"{value:g}" if abs(value) < 1e6 else f"{int(value)}"


def _positive(flag: str | None = None, high: float | None = None) -> Range:
    return Range(0, high, low_open=True, flag=flag)


def _whole(low: int, flag: str | None = None, high: int = MAX_WHOLE) -> Range:
    return Range(low, high, flag=flag)


def _fraction(flag: str | None = None, *, one: bool = False) -> Range:
    return Range(0, 1, low_open=True, high_open=not one, flag=flag)


# Every numeric setting (`section.key`; for a list, each item) and the values it accepts: NaN
# and ±inf never pass. `data.window_hours` is checked on its own (24 or 48).
RANGES: dict[str, Range] = {
    "data.threshold": Range(flag="--threshold"),
    "data.synthetic_seed": _whole(0),
    "split.val_fraction": _fraction(),
    "split.test_fraction": _fraction(),
    "train.epochs": _whole(1, "--epochs"),
    "train.batch_size": _whole(1, "--batch-size"),
    "train.lr": _positive("--lr"),
    "train.momentum": Range(0, 1, high_open=True),
    "train.weight_decay": Range(0),
    "train.hidden": _whole(1, "--hidden", MAX_LAYER_WIDTH),
    "train.dropout": Range(0, 1, high_open=True, flag="--dropout"),
    "train.patience": _whole(1),
    "train.logreg_c": _positive(),
    "run.seeds": _whole(1, "--seeds"),
    "run.epsilons": _positive("--epsilons", MAX_EPSILON),
    "run.bootstrap": _whole(0),
    "run.shadow_models": _whole(2, "--shadow-models", MAX_SHADOW_MODELS),
    "run.inversion_steps": _whole(1),
    "run.inversion_trials": _whole(1),
    "run.min_group_units": _whole(10, "--min-group"),
    "run.attack_units": _whole(1, "--attack-units"),
    "privacy.target_epsilon": _positive("--target-epsilon", MAX_EPSILON),
    "privacy.noise_multiplier": _positive("--noise-multiplier", MAX_NOISE_MULTIPLIER),
    "privacy.delta": Range(MIN_DELTA, 1, high_open=True, flag="--delta"),
    "privacy.max_grad_norm": _positive("--max-grad-norm"),
    "privacy.budget": _positive("--budget"),
    "privacy.data_norm": _positive("--data-norm"),
    "privacy.tune_trials": Range(1, MAX_TUNE_TRIALS, low_open=True, flag="--tune-trials"),
    "federated.rounds": _whole(1, "--rounds"),
    "federated.fraction": _fraction("--fraction", one=True),
    "federated.min_clients": _whole(1, "--min-clients"),
    "federated.proximal_mu": Range(0, flag="--proximal-mu"),
    "federated.server_lr": _positive("--server-lr"),
    "federated.min_client_size": _whole(1, "--min-client-size"),
    "split_learning.cut": _whole(1, "--cut"),
    "split_learning.noise": Range(0, flag="--activation-noise"),
    "split_learning.gradient_noise": Range(0, flag="--gradient-noise"),
    "split_learning.nopeek": Range(0, flag="--nopeek"),
}
MAX_PORT = 65_535  # TCP ports are 16-bit
# A federation needs at least two parties: with one client there is nothing to average, and
# "federated" results would be one site's model reported as a federation's.
MIN_FEDERATED_CLIENTS = 2


# The `medpriv run` options of the settings that are not numbers (those of numbers are in RANGES).
OPTION_FLAGS = {
    "data.spec": "--data",
    "data.target": "--target",
    "data.positive": "--positive",
    "data.unit_column": "--unit-column",
    "data.site_column": "--site-column",
    "data.member_column": "--member-column",
    "data.sensitive": "--sensitive",
    "data.drop": "--drop",
    "data.keep_duplicates": "--keep-duplicates",
    "data.window_hours": "--window-hours",
    "data.label": "--label",
    "data.all_stays": "--all-stays",
    "train.optimizer": "--optimizer",
    "train.calibrate": "--calibrate",
    "run.methods": "--methods",
    "run.model_input": "--model-input",
    "run.trusted_types": "--trust-type",
    "run.fitted": "--fitted",
    "run.out": "--out",
    "run.attacks": "--attacks",
    "privacy.accountant": "--accountant",
    "privacy.engine": "--dp-engine",
    "privacy.unit_policy": "--unit-policy",
    "privacy.allow_over_budget": "--allow-over-budget",
    "privacy.reproducible_noise": "--reproducible-noise",
    "federated.partition": "--partition",
    "federated.strategy": "--strategy",
    "split_learning.clients": "--sl-clients",
    "split_learning.server": "--sl-server",
    "split_learning.ca_certificate": "--sl-ca-cert",
    "split_learning.client_dp": "--client-dp",
}


def _flag(name: str) -> str:
    """' (--flag)' for a `section.key` that has a `medpriv run` option, else ''."""
    valid = RANGES.get(name)
    flag = valid.flag if valid is not None else OPTION_FLAGS.get(name)
    return f" ({flag})" if flag else ""


def range_problems(config: ExperimentConfig) -> list[str]:
    """Every numeric setting outside its `RANGES` entry, one problem each, naming the key, the
    valid range and its flag, e.g. 'train.lr must be > 0 and finite (--lr); got nan'."""
    problems = []
    for name, valid in RANGES.items():
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        items = value if isinstance(value, tuple) else () if value is None else (value,)
        bad = [v for v in items if v not in valid]
        if bad:
            each = "each value of " if isinstance(value, tuple) else ""
            problems.append(f"{each}{name} must be {valid.describe()}{_flag(name)}; got {bad[0]!r}")
    return problems


def split_learning_problems(s: SplitLearningConfig) -> list[str]:
    """Checks of the [split_learning] section beyond numeric ranges."""
    problems = []
    if s.clients is not None:
        try:
            PartitionSpec.parse(s.clients)
        except ConfigError as exc:
            problems.append(f"split_learning.clients{_flag('split_learning.clients')}: {exc}")
    if s.server is not None:
        host, _, port = s.server.rpartition(":")
        if not (host and port.isdigit() and 1 <= int(port) <= MAX_PORT):
            problems.append(
                f"split_learning.server (--sl-server) must be HOST:PORT with a port from 1 to "
                f"{MAX_PORT}, got {printable(s.server, 60)}"
            )
    if s.ca_certificate is not None and not Path(s.ca_certificate).expanduser().is_file():
        problems.append(
            f"split_learning.ca_certificate (--sl-ca-cert): no file {printable(s.ca_certificate)}; "
            "name the PEM file of the CA that signed the server's certificate"
        )
    return problems


def federated_problems(f: FederatedConfig) -> list[str]:
    """Checks of the [federated] section beyond numeric ranges."""
    problems = []
    if f.strategy not in FL_STRATEGIES:
        problems.append(
            f"federated.strategy (--strategy) must be one of {', '.join(FL_STRATEGIES)}"
        )
    if f.engine not in FL_ENGINES:
        problems.append(f"federated.engine (--engine) must be one of {', '.join(FL_ENGINES)}")
    try:
        spec = PartitionSpec.parse(f.partition)
    except ConfigError as exc:
        return [*problems, f"federated.partition (--partition): {exc}"]
    least = max(MIN_FEDERATED_CLIENTS, f.min_clients)
    if spec.clients is not None and spec.clients < least:
        problems.append(
            f"federated.partition (--partition) {spec} makes {spec.clients} client(s), fewer than "
            f"the minimum of {least} (a federation needs {MIN_FEDERATED_CLIENTS}; "
            f"federated.min_clients is {f.min_clients})"
        )
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
        problems = range_problems(self)
        s, t, r = self.split, self.train, self.run
        if s.val_fraction + s.test_fraction >= 0.9:
            problems.append("val_fraction + test_fraction must leave at least 10% for training")
        if t.optimizer is not None and t.optimizer not in OPTIMIZERS:
            problems.append(f"train.optimizer (--optimizer) must be one of {', '.join(OPTIMIZERS)}")
        if t.hidden is not None and not 1 <= len(t.hidden) <= MAX_HIDDEN_LAYERS:
            problems.append(
                f"train.hidden (--hidden) must list 1 to {MAX_HIDDEN_LAYERS} positive layer "
                "widths, e.g. [128, 64]"
            )
        unknown = [a for a in r.attacks if a not in ATTACK_NAMES]
        if unknown:
            problems.append(
                f"run.attacks (--attacks): unknown attacks {unknown}; choose from "
                f"{', '.join(ATTACK_NAMES)} (or none)"
            )
        if r.model_input not in MODEL_INPUTS:
            problems.append(
                f"run.model_input (--model-input) must be one of {', '.join(MODEL_INPUTS)}"
            )
        if r.device not in DEVICES:
            problems.append(f"run.device (--device) must be one of {', '.join(DEVICES)}")
        if not r.methods:
            problems.append("run.methods (--methods) is empty; name at least one method")
        named = {entry.split("@")[0].strip() for entry in r.methods}
        if "model" in named and not r.model:
            problems.append(
                "run.methods lists 'model' but run.model (--model package.module:factory) is "
                "not set"
            )
        if r.fitted and not r.model:
            problems.append("run.fitted (--fitted) needs run.model (--model FILE.skops)")
        if not r.out.strip():
            problems.append("run.out (--out) is empty; name the folder for the run folders")
        for entry in r.methods:
            try:
                parse_method(entry)
            except ConfigError as exc:
                problems.append(str(exc))
        if self.data.window_hours not in (24, 48):
            problems.append("data.window_hours (--window-hours) must be 24 or 48")
        if self.data.label not in ("hospital", "icu"):
            problems.append("data.label (--label) must be 'hospital' or 'icu'")
        problems += privacy_problems(self.privacy, self.run.epsilons)
        problems += federated_problems(self.federated)
        problems += split_learning_problems(self.split_learning)
        if problems:
            raise ConfigError("; ".join(dict.fromkeys(problems)))
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
    """Checks of the [privacy] section beyond numeric ranges."""
    problems = []
    if p.target_epsilon is None and p.noise_multiplier is None and not epsilons:
        problems.append("give privacy.target_epsilon (--target-epsilon) or --noise-multiplier")
    if p.accountant not in ("prv", "rdp"):
        problems.append(
            f"privacy.accountant (--accountant) must be 'prv' or 'rdp', got {p.accountant!r}"
        )
    if p.engine not in ("fast", "opacus"):
        problems.append(
            f"privacy.engine (--dp-engine) must be 'fast' or 'opacus', got {p.engine!r}"
        )
    if p.tune not in TUNING:
        problems.append(f"privacy.tune (--tune) must be one of {', '.join(TUNING)}")
    if p.unit_policy not in ("one-per-unit", "group"):
        problems.append(
            "privacy.unit_policy (--unit-policy) must be 'one-per-unit' or 'group', "
            f"got {p.unit_policy!r}"
        )
    return problems


SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
# What each declared type is called in an error message.
TYPE_NAMES = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "tuple[str, ...]": "a list of strings (or one comma-separated string)",
    "tuple[int, ...]": "a list of whole numbers (or one comma-separated string)",
    "tuple[float, ...]": "a list of numbers (or one comma-separated string)",
}
# String settings that may be written as a TOML number (compared as text, e.g. positive = 1).
NUMBER_AS_TEXT = {("data", "positive")}


def _scalar(kind: str, value: Any, *, number_as_text: bool = False) -> Any:
    """`value` as the scalar type named `kind` (bool is never a number), or a TypeError."""
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str" and number_as_text and number:
        return str(value)
    raise TypeError(kind)


def _from_text(item: str, value: Any) -> Any:
    """An item of a comma-separated string, as the list's item type."""
    if not isinstance(value, str):
        return value
    return float(value) if item == "float" else int(value) if item == "int" else value


def _coerce(name: str, section: type, key: str, value: Any) -> Any:
    """Convert a TOML/CLI value to the field's declared type; a wrong type is a ConfigError
    naming the key and the expected type.

    Comma-separated strings become tuples; `X | None` fields accept None.
    """
    declared = str(next(f for f in fields(section) if f.name == key).type)
    kind = declared.replace(" | None", "")
    try:
        if value is None and "None" in declared:
            return None
        if kind.startswith("tuple["):
            item = kind[len("tuple[") :].split(",")[0].strip()
            if isinstance(value, str):
                value = [_from_text(item, v.strip()) for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise TypeError(kind)
            return tuple(_scalar(item, v) for v in value)
        return _scalar(kind, value, number_as_text=(name, key) in NUMBER_AS_TEXT)
    except (TypeError, ValueError):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        expected = TYPE_NAMES.get(kind, kind)
        raise ConfigError(
            f"[{name}] {key}{_flag(f'{name}.{key}')} = {printable(shown)} has the wrong type: "
            f"expected {expected}"
        ) from None


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, list):
        return "a list"
    return {int: "a whole number", float: "a number", str: "a string"}.get(type(value), "a value")


def build_config(values: dict[str, Any]) -> ExperimentConfig:
    """An ExperimentConfig from nested section dicts; unknown sections or keys and values of the
    wrong type are errors, all gathered into one."""
    problems, sections = [], {}
    for name, body in values.items():
        if name not in SECTION_TYPES:
            problems.append(
                f"unknown config section [{printable(name)}]; valid: {sorted(SECTION_TYPES)}"
            )
            continue
        if not isinstance(body, dict):
            problems.append(
                f"config key {name!r} must be a [{name}] section (a table), not {_type_name(body)}"
            )
            continue
        cls = SECTION_TYPES[name]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            problems.append(f"unknown keys in [{name}]: {unknown}; valid: {sorted(known)}")
        coerced = {}
        for key in sorted(set(body) & known):
            try:
                coerced[key] = _coerce(name, cls, key, body[key])
            except ConfigError as exc:
                problems.append(str(exc))
        sections[name] = cls(**coerced)
    if problems:
        raise ConfigError("; ".join(problems))
    run = sections.get("run")
    named = {entry.split("@")[0].strip() for entry in run.methods} if run else set()
    if isinstance(run, RunConfig) and run.model and "model" not in named:
        # --model runs the user's model as the method `model`
        sections["run"] = dataclasses.replace(run, methods=(*run.methods, "model"))
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
    values: dict[str, Any] = {k: dict(v) for k, v in (base or {}).items()}
    if path is not None:
        for section, body in read_toml(Path(path)).items():
            if isinstance(body, dict) and isinstance(values.get(section), dict):
                values[section].update(body)
            else:
                values[section] = body
    for section, body in (overrides or {}).items():
        for key, value in body.items():
            if value is not None and isinstance(values.setdefault(section, {}), dict):
                values[section][key] = value
    return build_config(values)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a missing, unreadable or malformed file is a ConfigError."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder: name a TOML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"cannot parse {path}: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


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
