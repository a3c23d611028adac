"""The `medpriv` command line: thin — parses flags, builds the config, calls the pipeline."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medpriv.attacks.catalog import ATTACK_NAMES, DEFAULT_ATTACKS
from medpriv.cli_common import (
    AUDIT_EXIT,
    OneLineGroup,
    contradicted_runs,
    one_line_errors,
    take_debug_flag,
)
from medpriv.cli_fl import fl_app
from medpriv.cli_sl import sl_app
from medpriv.config import QUICK, ExperimentConfig, load_config
from medpriv.errors import MedprivError

app = typer.Typer(
    cls=OneLineGroup,  # a syntax error on the command line is one `error:` line too
    pretty_exceptions_show_locals=False,  # locals may hold patient rows
    add_completion=False,
    no_args_is_help=True,
    help="Private clinical prediction models, and measurements of how much they leak.",
)
data_app = typer.Typer(
    pretty_exceptions_show_locals=False,  # locals may hold patient rows
    no_args_is_help=True,
    help="Write synthetic MIMIC-III tables or extract cohorts.",
)
app.add_typer(data_app, name="data")
app.add_typer(fl_app, name="fl")
app.add_typer(sl_app, name="sl")


DataOpt = Annotated[
    str | None, typer.Option("--data", help="synthetic[:N_STAYS] | mimic3:DIR | csv:FILE")
]
TargetOpt = Annotated[str | None, typer.Option(help="CSV: the outcome column")]
PositiveOpt = Annotated[
    str | None, typer.Option(help="CSV: the value of --target that is positive")
]
ThresholdOpt = Annotated[float | None, typer.Option(help="CSV: label = target > THRESHOLD")]
UnitOpt = Annotated[str | None, typer.Option(help="CSV: privacy-unit column (default: each row)")]
SiteOpt = Annotated[str | None, typer.Option(help="CSV: hospital/site column")]
SensitiveOpt = Annotated[str | None, typer.Option(help="comma-separated sensitive columns")]
DropOpt = Annotated[str | None, typer.Option(help="comma-separated columns to drop")]
KeepDupOpt = Annotated[
    bool | None, typer.Option("--keep-duplicates", help="CSV: keep exact duplicate rows")
]
WindowOpt = Annotated[int | None, typer.Option(help="MIMIC: observation window, 24 or 48 hours")]
LabelOpt = Annotated[
    str | None, typer.Option(help="MIMIC: 'hospital' (in-hospital death) or 'icu'")
]
AllStaysOpt = Annotated[
    bool | None,
    typer.Option("--all-stays", help="MIMIC: keep every ICU stay, not only the first per patient"),
]


def data_overrides(
    data: str | None,
    target: str | None,
    positive: str | None,
    threshold: float | None,
    unit_column: str | None,
    site_column: str | None,
    sensitive: str | None,
    drop: str | None,
    keep_duplicates: bool | None,
    window_hours: int | None,
    label: str | None,
    all_stays: bool | None,
) -> dict:
    return {
        "spec": data,
        "target": target,
        "positive": positive,
        "threshold": threshold,
        "unit_column": unit_column,
        "site_column": site_column,
        "sensitive": sensitive,
        "drop": drop,
        "keep_duplicates": keep_duplicates,
        "window_hours": window_hours,
        "label": label,
        "all_stays": all_stays,
    }


@app.command()
@one_line_errors
def run(
    data: DataOpt = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated, e.g. baseline,logreg")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds (splits and inits)")] = None,
    attacks: Annotated[
        str | None,
        typer.Option(
            help=f"attacks on every model, from {','.join(ATTACK_NAMES)} "
            f"(default: {','.join(DEFAULT_ATTACKS)}), or none"
        ),
    ] = None,
    shadow_models: Annotated[
        int | None, typer.Option(help="shadow models for LiRA and RMIA (default 16)")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="your own scikit-learn classifier, run as the method 'model': "
            "package.module:factory (a callable returning an unfitted estimator or Pipeline), "
            "or a .skops file holding one (refitted; never a pickle)"
        ),
    ] = None,
    fitted: Annotated[
        bool | None,
        typer.Option(
            "--fitted",
            help="attack the --model .skops file's fitted weights as they are (its training "
            "patients named by --member-column); reference models refit clones",
        ),
    ] = None,
    member_column: Annotated[
        str | None,
        typer.Option(help="CSV: yes/no per record, the records the --fitted model was trained on"),
    ] = None,
    trust_type: Annotated[
        str | None,
        typer.Option(
            help="comma-separated types a --model .skops file may hold beyond those skops "
            "trusts by default (each runs code when the file is read)"
        ),
    ] = None,
    model_input: Annotated[
        str | None,
        typer.Option(
            help="what --model's estimator takes: design (medpriv's preprocessing, default) or "
            "table (the feature table, categoricals as pandas categories: its own pipeline)"
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto (a CUDA GPU when there is one), cpu or cuda: where the many-runs audit "
            "draws its runs (training stays on the CPU)"
        ),
    ] = None,
    min_group: Annotated[
        int | None,
        typer.Option(
            help="fewest patients (privacy units) a subgroup needs to be shown in the report's "
            "'who pays' section (default 50; smaller groups are suppressed)"
        ),
    ] = None,
    attack_units: Annotated[
        int | None,
        typer.Option(
            help="most patients (privacy units) of each side, members and non-members, whose "
            "records the membership and attribute attacks score (default 20000; a larger side "
            "is sampled at random, reference models still train on every patient)"
        ),
    ] = None,
    out: Annotated[str | None, typer.Option(help="parent folder of the run folder")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML experiment file")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this folder from its checkpoints")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="maximum training epochs (default: per method)")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="mini-batch size; expected batch size under DP (default: per method)"),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: per method)")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="adam or sgd (momentum) (default: per method)")
    ] = None,
    dropout: Annotated[float | None, typer.Option(help="dropout (default: per method)")] = None,
    calibrate: Annotated[
        bool | None,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="Platt-scale the network on validation (default: on for DP-SGD only)",
        ),
    ] = None,
    hidden: Annotated[str | None, typer.Option(help="hidden widths, e.g. 128,64")] = None,
    target: TargetOpt = None,
    positive: PositiveOpt = None,
    threshold: ThresholdOpt = None,
    unit_column: UnitOpt = None,
    site_column: SiteOpt = None,
    sensitive: SensitiveOpt = None,
    drop: DropOpt = None,
    keep_duplicates: KeepDupOpt = None,
    window_hours: WindowOpt = None,
    label: LabelOpt = None,
    all_stays: AllStaysOpt = None,
    epsilons: Annotated[
        str | None, typer.Option(help="ε sweep for private methods, e.g. 0.5,1,3,8")
    ] = None,
    target_epsilon: Annotated[
        float | None, typer.Option(help="ε to calibrate the noise to (default 1)")
    ] = None,
    noise_multiplier: Annotated[
        float | None, typer.Option(help="fixed σ instead of a target ε")
    ] = None,
    delta: Annotated[float | None, typer.Option(help="δ (default: below 1/n units)")] = None,
    max_grad_norm: Annotated[float | None, typer.Option(help="per-sample clipping norm")] = None,
    accountant: Annotated[str | None, typer.Option(help="prv (default) or rdp")] = None,
    dp_engine: Annotated[str | None, typer.Option(help="fast (default) or opacus")] = None,
    tune: Annotated[
        str | None,
        typer.Option(
            help="none (default: the recipe rule) or private: dp-sgd's learning rate and model "
            "chosen on validation patients by private selection, its cost in the reported ε"
        ),
    ] = None,
    tune_trials: Annotated[
        float | None,
        typer.Option(help="expected trials of --tune private (default 10; their number is hidden)"),
    ] = None,
    budget: Annotated[float | None, typer.Option(help="refuse to train past this total ε")] = None,
    allow_over_budget: Annotated[
        bool | None, typer.Option("--allow-over-budget", help="train past --budget anyway")
    ] = None,
    data_norm: Annotated[
        float | None,
        typer.Option(help="dp-logreg: public bound on a row's L2 norm (constant column included)"),
    ] = None,
    reproducible_noise: Annotated[
        bool | None,
        typer.Option(
            "--reproducible-noise",
            help="debugging only: draw DP noise from the run seed; the models carry NO guarantee",
        ),
    ] = None,
    unit_policy: Annotated[
        str | None,
        typer.Option(help="several records per unit: one-per-unit (default) or group"),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(help="federated clients: site (default), iid:K or dirichlet:K:ALPHA"),
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="federated rounds (default 20)")] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            help="federated methods: inprocess (default) or flower (a real local deployment: "
            "SuperLink + one SuperNode per site on 127.0.0.1)"
        ),
    ] = None,
    fraction: Annotated[
        float | None, typer.Option(help="fraction of clients per round (default 1)")
    ] = None,
    min_clients: Annotated[
        int | None, typer.Option(help="fewest usable updates to aggregate a round (default 2)")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="fedavg (default), fedprox or fedadam")
    ] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="FedProx μ (default 0.01)")] = None,
    server_lr: Annotated[float | None, typer.Option(help="FedAdam η (default 0.01)")] = None,
    min_client_size: Annotated[
        int | None, typer.Option(help="merge or drop clients below this many records")
    ] = None,
    cut: Annotated[
        int | None, typer.Option(help="split learning: hidden layers the client keeps (default 1)")
    ] = None,
    sl_clients: Annotated[
        str | None,
        typer.Option(help="split learning: hospitals, site | iid:K | dirichlet:K:A (default one)"),
    ] = None,
    sl_server: Annotated[
        str | None,
        typer.Option(help="split learning: a `medpriv sl server` HOST:PORT (default: in process)"),
    ] = None,
    sl_ca_cert: Annotated[
        Path | None, typer.Option(help="split learning: PEM CA certificate of the server's TLS")
    ] = None,
    activation_noise: Annotated[
        float | None, typer.Option(help="split learning: σ of noise on the activations sent")
    ] = None,
    client_dp: Annotated[
        bool | None,
        typer.Option(
            "--client-dp/--no-client-dp", help="split learning: DP-SGD on the client's layers"
        ),
    ] = None,
    nopeek: Annotated[
        float | None, typer.Option(help="split learning: NoPeek weight α (dCor penalty)")
    ] = None,
    gradient_noise: Annotated[
        float | None,
        typer.Option(help="U-shaped split: σ of noise on gradients sent back (relative to norm)"),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="smaller cohort, fewer epochs, rounds and shadows: under a minute"
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    allow_audit_failure: Annotated[
        bool,
        typer.Option(
            "--allow-audit-failure",
            help=f"exit 0 even when a canary audit contradicts a claimed ε (else {AUDIT_EXIT})",
        ),
    ] = False,
) -> None:
    """Train, evaluate and attack every method; write results.json, report.html, report.md.

    Exits with status 4 when a canary audit contradicts a model's claimed ε (the results and
    reports are written first), unless --allow-audit-failure."""
    from medpriv.console import ConsoleListener, print_summary
    from medpriv.data.sources import check_source
    from medpriv.experiment import RunPaths, run_experiment

    paths = None
    if resume is not None:
        if not (resume / "config.toml").is_file():
            raise MedprivError(f"--resume {resume}: no config.toml there; pass a run folder")
        config = config or resume / "config.toml"
        paths = RunPaths(resume)
    overrides = {
        "data": data_overrides(
            data,
            target,
            positive,
            threshold,
            unit_column,
            site_column,
            sensitive,
            drop,
            keep_duplicates,
            window_hours,
            label,
            all_stays,
        )
        | {"member_column": member_column},
        "run": {
            "methods": methods,
            "seeds": seeds,
            "out": out,
            "epsilons": epsilons,
            "attacks": [] if attacks is not None and attacks.strip() == "none" else attacks,
            "shadow_models": shadow_models,
            "device": device,
            "model": model,
            "model_input": model_input,
            "trusted_types": trust_type,
            "fitted": fitted,
            "min_group_units": min_group,
            "attack_units": attack_units,
        },
        "privacy": {
            "target_epsilon": target_epsilon,
            "noise_multiplier": noise_multiplier,
            "delta": delta,
            "max_grad_norm": max_grad_norm,
            "accountant": accountant,
            "engine": dp_engine,
            "budget": budget,
            "allow_over_budget": allow_over_budget,
            "unit_policy": unit_policy,
            "data_norm": data_norm,
            "reproducible_noise": reproducible_noise,
            "tune": tune,
            "tune_trials": tune_trials,
        },
        "train": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": optimizer,
            "dropout": dropout,
            "calibrate": calibrate,
            "hidden": _int_list(hidden, "--hidden"),
        },
        "federated": {
            "partition": partition,
            "rounds": rounds,
            "engine": engine,
            "fraction": fraction,
            "min_clients": min_clients,
            "strategy": strategy,
            "proximal_mu": proximal_mu,
            "server_lr": server_lr,
            "min_client_size": min_client_size,
        },
        "split_learning": {
            "cut": cut,
            "clients": sl_clients,
            "server": sl_server,
            "ca_certificate": None if sl_ca_cert is None else str(sl_ca_cert),
            "noise": activation_noise,
            "gradient_noise": gradient_noise,
            "nopeek": nopeek,
            "client_dp": client_dp,
        },
    }
    resolved: ExperimentConfig = load_config(config, overrides, base=QUICK if quick else None)
    check_source(resolved.data)  # an unknown source or a missing file fails before any work
    listener = ConsoleListener(progress=progress)
    previous = _stop_on_sigterm()
    try:
        with listener:
            document = run_experiment(
                resolved, paths=paths, resume=resume is not None, listener=listener
            )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # finished runs are saved; the listener said how to resume
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print_summary(document, listener.paths)
    contradicted = contradicted_runs(document)
    if contradicted and not allow_audit_failure:
        typer.echo(
            f"error: the canary audit contradicts the claimed ε of {', '.join(contradicted)}; "
            "do not release these models (--allow-audit-failure exits 0)",
            err=True,
        )
        raise typer.Exit(AUDIT_EXIT)


def _stop_on_sigterm() -> Any:
    """`kill PID` stops a run like Ctrl-C (finished runs saved, a partial report written);
    returns the handler it replaced (None off the main thread, where nothing changes)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        return None


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MedprivError(f"{flag} takes comma-separated whole numbers, e.g. 128,64") from None


@data_app.command("synth")
@one_line_errors
def data_synth(
    out: Annotated[Path, typer.Option(help="folder to write the MIMIC-III tables into")],
    stays: Annotated[int, typer.Option(help="number of ICU stays")] = 10_000,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    gzip: Annotated[bool, typer.Option("--gzip", help="write .csv.gz")] = False,
) -> None:
    """Write synthetic MIMIC-III v1.4 tables (patients, stays, events, dictionaries)."""
    from medpriv.data.sources import synthetic_stays
    from medpriv.data.synthetic import write_synthetic_mimic
    from medpriv.files import output_folder

    synthetic_stays(str(stays), option="--stays")
    if seed < 0:
        raise MedprivError(f"--seed must be a whole number >= 0, got {seed}")
    output_folder(out, option="--out")
    counts = write_synthetic_mimic(out, n_stays=stays, seed=seed, compress=gzip)
    for table, rows in counts.items():
        typer.echo(f"{table:<12} {rows:>12,} rows")
    typer.echo(f"wrote {out}")


@data_app.command("extract")
@one_line_errors
def data_extract(
    out: Annotated[Path, typer.Option(help="cohort CSV to write")],
    data: DataOpt = "synthetic",
    target: TargetOpt = None,
    positive: PositiveOpt = None,
    threshold: ThresholdOpt = None,
    unit_column: UnitOpt = None,
    site_column: SiteOpt = None,
    sensitive: SensitiveOpt = None,
    drop: DropOpt = None,
    keep_duplicates: KeepDupOpt = None,
    window_hours: WindowOpt = None,
    label: LabelOpt = None,
    all_stays: AllStaysOpt = None,
) -> None:
    """Extract the cohort table (one row per record, label, unit and site) and print its flow."""
    from medpriv.console import print_cohort
    from medpriv.data.export import write_cohort_csv
    from medpriv.data.sources import check_source, load_dataset
    from medpriv.files import output_file

    resolved = load_config(
        None,
        {
            "data": data_overrides(
                data,
                target,
                positive,
                threshold,
                unit_column,
                site_column,
                sensitive,
                drop,
                keep_duplicates,
                window_hours,
                label,
                all_stays,
            )
        },
    )
    check_source(resolved.data)
    output_file(out, option="--out", example="cohort.csv")  # before any work
    dataset = load_dataset(resolved.data)
    print_cohort(dataset)
    write_cohort_csv(dataset, out)
    typer.echo(f"wrote {len(dataset):,} rows to {out}")


@app.command("report")
@one_line_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder holding results.json")],
) -> None:
    """Regenerate report.html and report.md from a run folder's results.json alone."""
    import json

    from medpriv.report.files import write_reports
    from medpriv.results_schema import read_results

    results = run_dir / "results.json" if run_dir.is_dir() else run_dir
    if not results.is_file():
        raise MedprivError(f"{run_dir}: no results.json there; pass a run folder")
    try:
        document = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MedprivError(f"cannot read {results}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("runs"), list):
        raise MedprivError(f"{results} is not a medpriv results file (no 'runs' list)")
    read_results(document, source=str(results))  # every problem, with its path
    html, markdown = write_reports(document, results.parent)
    typer.echo(f"report:  {html}\nsummary: {markdown}")


@app.command("methods")
@one_line_errors
def list_methods() -> None:
    """List the registered training methods."""
    from medpriv.train.base import TRAINERS, get_trainer

    get_trainer("baseline")
    for name in TRAINERS.names():
        typer.echo(name)


def main() -> None:
    app(args=take_debug_flag(sys.argv[1:]), prog_name="medpriv")


if __name__ == "__main__":
    sys.exit(main())
