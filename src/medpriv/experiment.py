"""dataset -> methods x seeds -> evaluation -> results.json and report.html."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medpriv import __version__
from medpriv.attacks.runner import AttackPool, run_attacks
from medpriv.config import ExperimentConfig, PrivacyConfig, parse_method, to_toml
from medpriv.data.dataset import TabularDataset
from medpriv.data.sources import load_dataset
from medpriv.data.splits import Splits, split_by_unit, split_with_members
from medpriv.errors import ConfigError, MedprivError
from medpriv.files import clean_output_folders, output_folder, write_text_atomic
from medpriv.metrics import choose_threshold, curves, utility_metrics
from medpriv.results import results_json, run_entry
from medpriv.results_schema import read_results
from medpriv.subgroups import subgroup_block
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
    """Seeds x methods x (for private methods) the ε sweep, in that order.

    A method written `name@ε` runs at that ε only; a private method without one follows
    `run.epsilons`, else the fixed σ, else `privacy.target_epsilon`.
    """
    runs: list[RunSpec] = []
    for seed in range(config.run.seeds):
        for entry in config.run.methods:
            method, pinned = parse_method(entry)
            if not private[method]:
                if pinned is not None:
                    raise ConfigError(f"method {entry!r}: {method} is not private; drop the @ε")
                runs.append(RunSpec(f"{method} seed={seed}", method, seed, config.privacy))
                continue
            if pinned is not None:
                epsilons: tuple[float, ...] = (pinned,)
            elif config.run.epsilons:
                epsilons = config.run.epsilons
            elif config.privacy.noise_multiplier is not None:
                sigma = config.privacy.noise_multiplier
                runs.append(
                    RunSpec(f"{method} sigma={sigma:g} seed={seed}", method, seed, config.privacy)
                )
                continue
            else:
                epsilons = (float(config.privacy.target_epsilon),)
            for eps in epsilons:
                privacy = replace(config.privacy, target_epsilon=eps, noise_multiplier=None)
                runs.append(RunSpec(f"{method} eps={eps:g} seed={seed}", method, seed, privacy))
    names = [spec.name for spec in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"run.methods lists the same run twice: {', '.join(repeated)}")
    return runs


def make_splits(dataset: TabularDataset, config: ExperimentConfig, seed: int) -> Splits:
    """Train/val/test by unit, the same with attacks on or off: `train` is every unit outside
    validation and test, so the model measured (and attacked) is the one a hospital would
    release. Membership attacks take its training units as members and the test units as
    non-members (`medpriv.attacks.runner.AttackPool`)."""
    s = config.split
    if dataset.member_flags is not None:  # a model fitted elsewhere: its training units
        return split_with_members(
            dataset, val_fraction=s.val_fraction, test_fraction=s.test_fraction, seed=seed
        )
    return split_by_unit(
        dataset, val_fraction=s.val_fraction, test_fraction=s.test_fraction, seed=seed
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
    return int(trainer.planned_epochs(config.train))


# Changes allowed on --resume. Runs are named by method, ε and seed, so a changed plan reuses
# the finished runs it still names; longer training continues every run from its checkpoint.
PLAN_KEYS = {("run", "progress"), ("run", "out"), ("run", "methods"), ("run", "seeds")}
PLAN_KEYS |= {("run", "epsilons")}
LONGER_TRAINING_KEYS = {("train", "epochs"), ("federated", "rounds")}


def _previous_runs(config: ExperimentConfig, paths: RunPaths) -> tuple[dict, dict[str, dict]]:
    """(the saved document, its finished runs by name) for `--resume`.

    Finished runs are reused only when they answer the same question: the config must match
    the saved one except for the plan (methods, seeds, ε sweep); asking for more epochs or
    rounds continues every run from its checkpoint instead of reusing it.
    """
    if not paths.results.is_file():
        return {}, {}
    try:
        saved = json.loads(paths.results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedprivError(f"cannot read {paths.results} to resume: {exc}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("runs"), list):
        raise MedprivError(f"{paths.results} is not a medpriv results file")
    read_results(saved, source=str(paths.results))  # every problem, with its path
    old, new = saved.get("config", {}), config.to_dict()
    changed = sorted(
        f"{section}.{key}"
        for section in set(old) | set(new)
        for key in set(old.get(section, {})) | set(new.get(section, {}))
        if (section, key) not in PLAN_KEYS
        and old.get(section, {}).get(key) != new.get(section, {}).get(key)
    )
    if changed and all(tuple(c.split(".", 1)) in LONGER_TRAINING_KEYS for c in changed):
        return saved, {}
    if changed:
        raise MedprivError(
            f"--resume {paths.root}: the config differs from the saved run in "
            f"{', '.join(changed)}; start a new run instead"
        )
    finished = {
        run["name"]: run for run in saved["runs"] if isinstance(run, dict) and "name" in run
    }
    return saved, finished


def run_experiment(
    config: ExperimentConfig,
    *,
    paths: RunPaths | None = None,
    resume: bool = False,
    listener: Listener | None = None,
    dataset: TabularDataset | None = None,
    model_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run every method for every seed; results.json is rewritten atomically after each run.

    `model_factory` (from Python: `medpriv.audit`) is the method `model`'s factory given as an
    object instead of by name (`config.run.model` then only names it).

    The output folder is checked before any work, and temp files a killed run left there are
    removed. With `resume`, runs already in the folder's results.json are kept as they are and
    skipped, and an unfinished run continues from its checkpoint. Interrupted (Ctrl-C), the
    document keeps every finished run, is marked incomplete, and the report shows what there
    is. `complete: true` is written last, after the reports: a run killed before that is
    finished by `resume` without recomputing.
    """
    notify = listener or (lambda event, info: None)
    trainers = {  # unknown names fail here
        m: get_trainer(
            m,
            federated=config.federated,
            split_learning=config.split_learning,
            experiment=config,
            model=config.run.model,
            factory=model_factory,
            model_input=config.run.model_input,
            trusted_types=config.run.trusted_types,
            fitted=config.run.fitted,
        )
        for m in {parse_method(entry)[0] for entry in config.run.methods}
    }
    plan = plan_runs(config, {m: t.private for m, t in trainers.items()})
    if paths is None:
        paths = RunPaths.new(output_folder(Path(config.run.out), option="--out"))
    else:
        output_folder(paths.root, option="--resume" if resume else "--out")
    cleaned = clean_output_folders(paths.root, paths.root / "checkpoints")
    if cleaned:
        notify("cleaned", {"text": cleaned})
    saved, finished = _previous_runs(config, paths) if resume else ({}, {})
    if dataset is None:
        notify("loading", {"spec": config.data.spec})
        dataset = load_dataset(config.data)
    notify("dataset", {"dataset": dataset})
    if config.run.fitted and dataset.member_flags is None:
        raise ConfigError(
            "--fitted needs --member-column: which patients the fitted model was trained on "
            "(its membership ground truth)"
        )
    if finished and json.loads(json.dumps(dataset.summary())) != saved.get("dataset"):
        raise MedprivError(
            f"--resume {paths.root}: the data no longer match the saved run's (records, "
            "outcome rate or cohort flow changed); start a new run instead"
        )
    write_text_atomic(to_toml(config), paths.config)
    document: dict[str, Any] = {
        "medpriv_version": __version__,
        "created": saved.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "dataset": dataset.summary(),
        "complete": False,
        "runs": [],
    }
    splits_by_seed: dict[int, Splits] = {}
    try:
        for spec in plan:
            if spec.name in finished:
                document["runs"].append(finished[spec.name])
                notify("run_skipped", {"name": spec.name})
                continue
            if spec.seed not in splits_by_seed:  # runs are ordered by seed: keep one set alive
                splits_by_seed = {spec.seed: make_splits(dataset, config, spec.seed)}
            entry = _train_and_measure(
                spec,
                splits_by_seed[spec.seed],
                trainers[spec.method],
                config,
                paths,
                resume,
                notify,
            )
            document["runs"].append(entry)
            _save(document, paths)
            notify("run_end", {"name": spec.name, "entry": entry})
    except KeyboardInterrupt:
        _save(document, paths, reports=True)
        notify("interrupted", {"paths": paths, "done": len(document["runs"]), "of": len(plan)})
        raise
    document["complete"] = True
    _save(document, paths, reports=True)
    notify("done", {"paths": paths})
    return document


def _save(document: dict[str, Any], paths: RunPaths, *, reports: bool = False) -> None:
    """results.json, and with `reports` report.html and report.md first — rendered from the
    JSON exactly as written (what `medpriv report` later reads), and before it, so results.json
    never says `complete` while a report is missing."""
    text = results_json(document)
    if reports:
        from medpriv.report.files import write_reports

        write_reports(json.loads(text), paths.root)
    write_text_atomic(text, paths.results)


def _train_and_measure(
    spec: RunSpec,
    splits: Splits,
    trainer: Any,
    config: ExperimentConfig,
    paths: RunPaths,
    resume: bool,
    notify: Listener,
) -> dict[str, Any]:
    """Fit one run (from its checkpoint when resuming), evaluate it and attack it."""
    name, seed = spec.name, spec.seed
    notify("run_start", {"name": name, "epochs": planned_epochs(trainer, config)})
    if trainer.fitted_elsewhere:
        model = trainer.load_fitted(splits=splits, config=config.train)
    else:
        model = trainer.fit(
            splits=splits,
            config=config.train,
            privacy=spec.privacy,
            seed=seed,
            checkpoint=paths.checkpoint(name),
            resume=resume,
            on_epoch=lambda epoch, record: notify(
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
    membership: dict[str, Any] = {}
    pool = None
    if config.run.attacks:
        started = time.perf_counter()
        pool = AttackPool.from_splits(splits, max_units=config.run.attack_units, seed=seed)
        entry["attacks"], membership = run_attacks(
            model,
            splits,
            attacks=config.run.attacks,
            trainer=trainer,
            config=config.train,
            privacy=spec.privacy,
            n_shadow=config.run.shadow_models,
            inversion_steps=config.run.inversion_steps,
            inversion_trials=config.run.inversion_trials,
            device=config.run.device,
            seed=seed,
            progress=lambda text: notify("attack", {"name": name, "text": text}),
            pool=pool,
        )
        entry["cost"]["attack_seconds"] = round(time.perf_counter() - started, 4)
    subgroups = subgroup_block(
        test=splits.test,
        test_prob=model.predict_proba(splits.test),
        reference=splits.val,
        pool=pool.records if membership and pool is not None else None,
        membership=membership,
        min_units=config.run.min_group_units,
        n_boot=config.run.bootstrap,
        seed=seed,
    )
    if subgroups is not None:
        entry["subgroups"] = subgroups
    return entry
