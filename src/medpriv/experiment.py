"""dataset -> methods x seeds -> evaluation -> results.json and report.html."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medpriv import __version__
from medpriv.attacks.runner import run_attacks
from medpriv.config import ExperimentConfig, PrivacyConfig, to_toml
from medpriv.data.dataset import TabularDataset
from medpriv.data.sources import load_dataset
from medpriv.data.splits import Splits, split_by_unit
from medpriv.metrics import choose_threshold, curves, utility_metrics
from medpriv.results import run_entry, write_json_atomic
from medpriv.train.base import TrainedModel, get_trainer

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class RunPaths:
    """Where one experiment writes: results.json, report.html, config.toml, checkpoints/."""

    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def checkpoint(self, run_name: str) -> Path:
        slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in run_name)
        return self.root / "checkpoints" / f"{slug}.pt"

    @classmethod
    def new(cls, out: Path) -> RunPaths:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        root, k = Path(out) / stamp, 1
        while root.exists():
            root, k = Path(out) / f"{stamp}-{k}", k + 1
        return cls(root)


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method, a seed and (for private methods) its privacy settings."""

    name: str
    method: str
    seed: int
    privacy: PrivacyConfig


def plan_runs(config: ExperimentConfig, private: dict[str, bool]) -> list[RunSpec]:
    """Seeds x methods x (for private methods) the ε sweep, in that order."""
    runs = []
    for seed in range(config.run.seeds):
        for method in config.run.methods:
            if not private[method]:
                runs.append(RunSpec(f"{method} seed={seed}", method, seed, config.privacy))
            elif config.run.epsilons:
                for eps in config.run.epsilons:
                    privacy = replace(config.privacy, target_epsilon=eps, noise_multiplier=None)
                    runs.append(RunSpec(f"{method} eps={eps:g} seed={seed}", method, seed, privacy))
            elif config.privacy.noise_multiplier is not None:
                sigma = config.privacy.noise_multiplier
                runs.append(
                    RunSpec(f"{method} sigma={sigma:g} seed={seed}", method, seed, config.privacy)
                )
            else:
                eps = config.privacy.target_epsilon
                runs.append(
                    RunSpec(f"{method} eps={eps:g} seed={seed}", method, seed, config.privacy)
                )
    return runs


def make_splits(dataset: TabularDataset, config: ExperimentConfig, seed: int) -> Splits:
    """Train/val/test by unit; with attacks on, the rest is an attack pool split in half:
    `train` (the members the target learns from) and `nonmember`."""
    s = config.split
    extra = None
    if config.run.attacks:
        extra = {"nonmember": (1 - s.val_fraction - s.test_fraction) / 2}
    return split_by_unit(
        dataset,
        val_fraction=s.val_fraction,
        test_fraction=s.test_fraction,
        extra=extra,
        seed=seed,
    )


def evaluate(
    model: TrainedModel, splits: Splits, *, n_boot: int = 1000, seed: int = 0
) -> tuple[dict, dict]:
    """(utility block, curves) on the test split; the alternative threshold is chosen on val."""
    threshold = choose_threshold(splits.val.labels, model.predict_proba(splits.val))
    prob = model.predict_proba(splits.test)
    utility = utility_metrics(
        splits.test.labels, prob, val_threshold=threshold, n_boot=n_boot, seed=seed
    )
    return utility, curves(splits.test.labels, prob)


def planned_epochs(trainer: Any, config: ExperimentConfig) -> int:
    """What a run's progress bar counts: the trainer's own plan (e.g. federated rounds), else the
    resolved epochs; one-shot fits count 1."""
    if hasattr(trainer, "planned_epochs"):
        return int(trainer.planned_epochs(config.train))
    return config.train.resolved(getattr(trainer, "recipe", {})).epochs or 1


def run_experiment(
    config: ExperimentConfig,
    *,
    paths: RunPaths | None = None,
    resume: bool = False,
    listener: Listener | None = None,
    dataset: TabularDataset | None = None,
) -> dict[str, Any]:
    """Run every method for every seed; results.json is rewritten after each run."""
    notify = listener or (lambda event, info: None)
    trainers = {  # unknown names fail here
        m: get_trainer(m, federated=config.federated, split_learning=config.split_learning)
        for m in config.run.methods
    }
    if dataset is None:
        notify("loading", {"spec": config.data.spec})
        dataset = load_dataset(config.data)
    notify("dataset", {"dataset": dataset})
    paths = paths or RunPaths.new(Path(config.run.out))
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(to_toml(config), encoding="utf-8")
    document: dict[str, Any] = {
        "medpriv_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "dataset": dataset.summary(),
        "runs": [],
    }
    splits_by_seed: dict[int, Splits] = {}
    for spec in plan_runs(config, {m: getattr(t, "private", False) for m, t in trainers.items()}):
        name, seed = spec.name, spec.seed
        if seed not in splits_by_seed:  # runs are ordered by seed: keep one split set alive
            splits_by_seed = {seed: make_splits(dataset, config, seed)}
        splits = splits_by_seed[seed]
        notify("run_start", {"name": name, "epochs": planned_epochs(trainers[spec.method], config)})
        model = trainers[spec.method].fit(
            splits=splits,
            config=config.train,
            privacy=spec.privacy,
            seed=seed,
            checkpoint=paths.checkpoint(name),
            resume=resume,
            on_epoch=lambda epoch, record, name=name: notify(
                "epoch", {"name": name, "epoch": epoch, "record": record}
            ),
        )
        started = time.perf_counter()
        utility, run_curves = evaluate(model, splits, n_boot=config.run.bootstrap, seed=seed)
        entry = run_entry(
            name=name,
            model=model,
            seed=seed,
            utility=utility,
            curves=run_curves,
            split_sizes=splits.sizes(),
        )
        entry["cost"]["eval_seconds"] = round(time.perf_counter() - started, 4)
        if config.run.attacks:
            started = time.perf_counter()
            entry["attacks"], _ = run_attacks(
                model,
                splits,
                attacks=config.run.attacks,
                trainer=trainers[spec.method],
                config=config.train,
                privacy=spec.privacy,
                n_shadow=config.run.shadow_models,
                seed=seed,
                progress=lambda text, name=name: notify("attack", {"name": name, "text": text}),
            )
            entry["cost"]["attack_seconds"] = round(time.perf_counter() - started, 4)
        document["runs"].append(entry)
        write_json_atomic(document, paths.results)
        notify("run_end", {"name": name, "entry": entry})
    write_json_atomic(document, paths.results)
    from medpriv.report.html import write_report

    write_report(document, paths.report)
    notify("done", {"paths": paths})
    return document
