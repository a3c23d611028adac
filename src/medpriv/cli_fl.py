"""`medpriv fl`: federated training on a real Flower deployment.

Each hospital runs a SuperNode on its own data; the coordinator runs the SuperLink and starts
the run. Thin wrappers over flower-superlink / flower-supernode / flwr run (the equivalent plain
Flower commands are printed with --dry-run and documented in the README).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from medpriv.cli_common import check_options, one_line_errors
from medpriv.config import MAX_PORT, MAX_WHOLE, MIN_FEDERATED_CLIENTS, Range
from medpriv.errors import MedprivError
from medpriv.untrusted import printable

PORT = Range(1, MAX_PORT)
SEED = Range(0, MAX_WHOLE)

fl_app = typer.Typer(
    pretty_exceptions_show_locals=False,  # locals may hold patient rows
    no_args_is_help=True,
    help="Federated learning on Flower: a SuperLink, one SuperNode per hospital, a run.",
)

MethodOpt = Annotated[
    str, typer.Option(help="fedavg, fedavg-dp (DP-SGD in clients) or fedavg-cdp (client-level)")
]
EpsilonOpt = Annotated[float | None, typer.Option(help="private methods: the target ε")]
SecaggOpt = Annotated[
    bool, typer.Option("--secagg", help="SecAgg+: the coordinator sees only the aggregate")
]
HomeOpt = Annotated[
    Path | None, typer.Option(help="FLWR_HOME for this process (default: ./.flwr/<role>)")
]


def _start(command: list[str], home: Path, dry_run: bool) -> None:
    from medpriv.train.federated.deployment import flower_env

    typer.echo("$ " + " ".join(_quote(c) for c in command))
    if dry_run:
        return
    raise typer.Exit(subprocess.call(command, env=flower_env(home)))


def _print_rounds(history: Path) -> None:
    """One line per completed round of a coordinator's history.json (if it was written)."""
    if not history.exists():
        return
    for record in json.loads(history.read_text()):
        if record.get("clients") is None:  # client-level DP: who took part is withheld
            typer.echo(
                f"round {record['round']:>3}: participants withheld, val AUROC "
                f"{record['val_auroc']:.4f}"
            )
            continue
        dropped = ", ".join(f"{k} ({v})" for k, v in record["dropped"].items()) or "none"
        typer.echo(
            f"round {record['round']:>3}: {record['clients']} clients, val AUROC "
            f"{record['val_auroc']:.4f}, dropped: {dropped}"
        )


def _print_outcome(done: dict, out: Path) -> None:
    """The sites' held-out utility and where results.json and the reports are."""
    combined = (done.get("evaluation") or {}).get("combined") or {}
    if combined.get("auroc") is not None:
        typer.echo(
            f"held-out patients at the sites: n = {combined['n']}, AUROC "
            f"{combined['auroc']:.4f} ± {combined['auroc_binning_error']:.4f} (binning)"
        )
    for site, reason in sorted(((done.get("evaluation") or {}).get("missing") or {}).items()):
        typer.echo(f"no held-out figures from {printable(site)}: {printable(reason)}")
    if (out / "results.json").is_file():
        typer.echo(f"results: {out / 'results.json'}")
        typer.echo(f"report:  {out / 'report.html'} (and report.md)")


TlsCertOpt = Annotated[
    Path | None, typer.Option(help="TLS: the SuperLink's PEM certificate (with --tls-key)")
]
TlsKeyOpt = Annotated[Path | None, typer.Option(help="TLS: the SuperLink's PEM private key")]
CaCertOpt = Annotated[
    Path | None,
    typer.Option(
        help="TLS: the PEM CA certificate that signed the SuperLink's (default: insecure)"
    ),
]


def _tls(ca: Path | None, cert: Path | None, key: Path | None, *, server: bool) -> Any:
    """TLS settings from the flags, or None (plain text, `--insecure`)."""
    from medpriv.train.federated.deployment import Tls

    if ca is None and cert is None and key is None:
        return None
    if server and (cert is None or key is None):
        raise MedprivError("TLS needs both --tls-cert and --tls-key")
    if ca is None:
        if not server:
            raise MedprivError("--ca-cert is needed to trust the SuperLink's certificate")
        ca = cert  # a self-signed certificate is its own CA
    return Tls(ca_certificate=ca, certificate=cert, key=key)


def _output(out: Path, *inside: str) -> Path:
    """`--out` resolved and checked before any work (a folder this process can write), and
    cleared of temp files a killed run left there or in its `inside` folders (said in one line)."""
    from medpriv.files import clean_output_folders, output_folder

    out = output_folder(out.resolve(), option="--out")
    note = clean_output_folders(out, *(out / name for name in inside))
    if note:
        typer.echo(note)
    return out


def _quote(text: str) -> str:
    return shlex.quote(text)


@fl_app.command("superlink")
@one_line_errors
def superlink(
    port: Annotated[int, typer.Option(help="HTTP port (Fleet, Control and Runtime APIs)")] = 9092,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    home: HomeOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    ca_cert: CaCertOpt = None,
    allow_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="admit only SuperNodes holding one of these public keys (`medpriv fl keygen`; "
            "repeat per hospital; TLS required)"
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the command only")] = False,
) -> None:
    """Run the coordinator's SuperLink in the foreground (Ctrl-C stops it). With --allow-key,
    Flower's node authentication is on: each key is registered once the SuperLink is up, and a
    SuperNode with any other key is turned away."""
    from medpriv.train.federated.deployment import (
        executable,
        flower_env,
        register_node_keys,
        security_args,
        wait_healthy,
    )

    check_options(port=(port, PORT))
    tls = _tls(ca_cert, tls_cert, tls_key, server=True)
    keys = list(allow_key or [])
    if keys and tls is None:
        raise MedprivError("--allow-key needs TLS: give --tls-cert and --tls-key")
    for key in keys:
        if not key.is_file():
            raise MedprivError(f"--allow-key: no file {key}")
    command = [
        executable("flower-superlink"),
        *security_args(tls, server=True),
        *(["--enable-supernode-auth"] if keys else []),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    home = home or Path(".flwr") / "superlink"
    if not keys:
        _start(command, home, dry_run)
        return
    typer.echo("$ " + " ".join(_quote(c) for c in command))
    for key in keys:
        typer.echo(f"$ flwr supernode register {_quote(str(key.resolve()))} local")
    if dry_run:
        return
    process = subprocess.Popen(command, env=flower_env(home))
    try:
        wait_healthy(port, tls, alive=lambda: process.poll() is None)
        register_node_keys(home, superlink=f"127.0.0.1:{port}", keys=keys, tls=tls)
        typer.echo(f"registered {len(keys)} SuperNode key(s); other SuperNodes are turned away")
        raise typer.Exit(process.wait())
    finally:
        if process.poll() is None:
            process.terminate()


@fl_app.command("supernode")
@one_line_errors
def supernode(
    data: Annotated[str, typer.Option("--data", help="this hospital's data: csv:FILE, ...")],
    superlink_address: Annotated[
        str, typer.Option("--superlink", help="the SuperLink, HOST:PORT")
    ] = "127.0.0.1:9092",
    site: Annotated[
        str | None, typer.Option(help="site name (and filter, if the data holds several)")
    ] = None,
    split_seed: Annotated[
        int | None,
        typer.Option(help="train on the standard split's training part (test federations)"),
    ] = None,
    target: Annotated[str | None, typer.Option(help="CSV: the outcome column")] = None,
    positive: Annotated[str | None, typer.Option(help="CSV: the positive value")] = None,
    threshold: Annotated[float | None, typer.Option(help="CSV: label = target > X")] = None,
    site_column: Annotated[str | None, typer.Option(help="CSV: site column")] = None,
    unit_column: Annotated[str | None, typer.Option(help="CSV: privacy-unit column")] = None,
    port: Annotated[int, typer.Option(help="this node's own API port")] = 9094,
    max_epsilon: Annotated[
        float | None,
        typer.Option(
            help="DP: this hospital's privacy budget ε over every DP run on its data (without "
            "it the node refuses fedavg-dp)"
        ),
    ] = None,
    min_noise_multiplier: Annotated[
        float, typer.Option(help="DP: refuse recipes with a smaller noise multiplier σ")
    ] = 0.0,
    max_grad_norm: Annotated[
        float | None, typer.Option(help="DP: refuse recipes with a larger clipping norm C")
    ] = None,
    delta: Annotated[
        float | None,
        typer.Option(help="DP: δ of this node's accountant (default: below 1/(10·its records))"),
    ] = None,
    privacy_ledger: Annotated[
        Path | None,
        typer.Option(
            help="DP: the file that keeps this node's privacy ledger across runs "
            "(default: <home>/privacy-ledger.json)"
        ),
    ] = None,
    reproducible_noise: Annotated[
        bool,
        typer.Option(
            "--reproducible-noise",
            help="DP, debugging/tests only: replayable noise from --noise-seed (NO guarantee)",
        ),
    ] = False,
    noise_seed: Annotated[int, typer.Option(help="seed of --reproducible-noise")] = 0,
    home: HomeOpt = None,
    ca_cert: CaCertOpt = None,
    node_key: Annotated[
        Path | None,
        typer.Option(
            help="this hospital's private key (`medpriv fl keygen`), for a SuperLink that "
            "admits only registered SuperNodes"
        ),
    ] = None,
    eval_data: Annotated[
        str | None,
        typer.Option(
            help="this hospital's held-out patients (a data spec with --data's CSV options), "
            "for federated evaluation: only a histogram of the model's scores leaves the node"
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the command only")] = False,
) -> None:
    """Run one hospital's SuperNode in the foreground; its rows never leave this process. Its
    privacy policy (--max-epsilon, --min-noise-multiplier, --max-grad-norm) is its own: the
    coordinator cannot change it, and a DP recipe that breaks it is refused."""
    from medpriv.data.sources import SOURCES, parse_spec
    from medpriv.train.federated.deployment import (
        NodeSpec,
        executable,
        node_key_args,
        security_args,
    )
    from medpriv.train.federated.policy import ClientPolicy

    # The data live on the hospital's machine (a dry run may be elsewhere): check the spec's
    # form here, the file when the node loads it.
    SOURCES.get(parse_spec(data)[0])
    check_options(port=(port, PORT), split_seed=(split_seed, SEED), threshold=(threshold, Range()))
    options: dict[str, str | float] = {
        key: value
        for key, value in {
            "target": target,
            "positive": positive,
            "threshold": threshold,
            "site-column": site_column,
            "unit-column": unit_column,
            "eval-data": eval_data,
        }.items()
        if value is not None
    }
    if eval_data is not None:
        SOURCES.get(parse_spec(eval_data)[0])
    policy = ClientPolicy(
        max_epsilon=max_epsilon,
        min_noise_multiplier=min_noise_multiplier,
        max_grad_norm=max_grad_norm,
        delta=delta,
        reproducible_noise=reproducible_noise,
        noise_seed=noise_seed,
    )
    home = home or Path(".flwr") / f"supernode-{site or port}"
    node = NodeSpec(
        data=data,
        site=site,
        split_seed=split_seed,
        options=options,
        policy=policy,
        ledger=privacy_ledger or home / "privacy-ledger.json",
        key=node_key,
    )
    command = [
        executable("flower-supernode"),
        *security_args(_tls(ca_cert, None, None, server=False), server=False),
        *node_key_args(node),
        "--superlink",
        superlink_address,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--node-config",
        node.node_config(),
    ]
    _start(command, home, dry_run)


@fl_app.command("keygen")
@one_line_errors
def keygen(
    name: Annotated[str, typer.Option(help="the hospital's name: the key files' name")],
    out: Annotated[Path, typer.Option(help="folder for NAME (private) and NAME.pub")] = Path(
        "keys"
    ),
) -> None:
    """Create a hospital's SuperNode key pair (EC P-384, OpenSSH format). The private key stays
    on the hospital's machine (`medpriv fl supernode --node-key`); the public key goes to the
    coordinator's allow-list (`medpriv fl superlink --allow-key`)."""
    from medpriv.train.federated.deployment import create_node_key

    private, public = create_node_key(out, name)
    typer.echo(f"private key: {private} (keep it on {name}'s machine, readable by you only)")
    typer.echo(f"public key:  {public} (send it to the coordinator for --allow-key)")


@fl_app.command("run")
@one_line_errors
def run(
    out: Annotated[Path, typer.Option(help="folder for the job, weights, history and logs")],
    superlink_address: Annotated[
        str, typer.Option("--superlink", help="the SuperLink, HOST:PORT")
    ] = "127.0.0.1:9092",
    config: Annotated[
        Path | None, typer.Option("--config", help="experiment TOML ([data], [train], [federated])")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="the coordinator's data (validation patients)")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="rounds (default 20)")] = None,
    strategy: Annotated[str | None, typer.Option(help="fedavg, fedprox or fedadam")] = None,
    method: MethodOpt = "fedavg",
    target_epsilon: EpsilonOpt = None,
    secagg: SecaggOpt = False,
    nodes: Annotated[int, typer.Option(help="wait for this many SuperNodes")] = 2,
    seed: Annotated[int, typer.Option(help="seed of the split, init and client seeds")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue from the checkpoint in --out")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the run")] = 3600.0,
    ca_cert: CaCertOpt = None,
) -> None:
    """Start a federated run on a running SuperLink and wait for it; prints each round."""
    from medpriv.config import load_config
    from medpriv.train.federated.deployment import flwr_run
    from medpriv.train.federated.job import job_from_config

    check_options(
        nodes=(nodes, Range(MIN_FEDERATED_CLIENTS, MAX_WHOLE)),
        seed=(seed, SEED),
        timeout=(timeout, Range(0, low_open=True)),
    )
    out = _output(out)
    resolved = load_config(
        config,
        {
            "data": {"spec": data},
            "federated": {"rounds": rounds, "strategy": strategy},
            "privacy": {"target_epsilon": target_epsilon},
            "run": {"attacks": []},
        },
    )
    job = job_from_config(
        resolved,
        out=out,
        seed=seed,
        expected_clients=nodes,
        resume=resume,
        method=method,
        secagg=secagg,
    )
    path = job.write(out / "job.json")
    typer.echo(f"job: {path}")
    outcome = flwr_run(
        out,
        superlink=superlink_address,
        job_path=path,
        timeout=timeout,
        tls=_tls(ca_cert, None, None, server=False),
    )
    _print_rounds(out / "history.json")
    if not outcome.completed:
        error = out / "error.txt"
        detail = (
            error.read_text()[-2000:] if error.exists() else outcome.details or outcome.log[-2000:]
        )
        raise MedprivError(f"the federated run did not complete ({outcome.status}): {detail}")
    done = json.loads((out / "done.json").read_text())
    typer.echo(f"privacy: {done['privacy']['statement']}")
    if done.get("secure_aggregation"):
        typer.echo(f"secure aggregation: {done['secure_aggregation']}")
    typer.echo(f"final weights: {out / 'final.npz'}; best round's: {out / 'best.npz'}")
    _print_outcome(done, out)


@fl_app.command("local")
@one_line_errors
def local(
    out: Annotated[Path, typer.Option(help="working folder")],
    data: Annotated[
        str, typer.Option("--data", help="one dataset carved into sites")
    ] = "synthetic",
    sites: Annotated[
        str | None, typer.Option(help="comma-separated sites to run a SuperNode for (default all)")
    ] = None,
    rounds: Annotated[int, typer.Option(help="rounds")] = 5,
    method: MethodOpt = "fedavg",
    target_epsilon: EpsilonOpt = None,
    secagg: SecaggOpt = False,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    ca_cert: CaCertOpt = None,
) -> None:
    """A whole deployment on this machine: SuperLink + one SuperNode per site, one run, all
    processes stopped by PID at the end. For trying Flower out; hospitals use the commands above."""
    from medpriv.config import load_config
    from medpriv.data.sources import check_source, load_dataset
    from medpriv.train.federated.deployment import LocalFederation
    from medpriv.train.federated.engine import check_enough_clients
    from medpriv.train.federated.job import job_from_config
    from medpriv.train.federated.on_flower import site_nodes

    check_options(seed=(seed, SEED))
    out = _output(out, "run")
    resolved = load_config(
        None,
        {
            "data": {"spec": data},
            "federated": {"rounds": rounds},
            "privacy": {"target_epsilon": target_epsilon},
        },
    )
    check_source(resolved.data)
    dataset = load_dataset(resolved.data)
    if dataset.site_ids is None:
        raise MedprivError(f"{data} has no sites; pass --site-column for a CSV")
    present = sorted({str(s) for s in dataset.site_ids})
    names = list(dict.fromkeys(s.strip() for s in (sites or "").split(",") if s.strip()))
    unknown = [name for name in names if name not in present]
    if unknown:  # the sites present are cell values of the data: named only by count
        raise MedprivError(
            f"--sites: {unknown} not among the {len(present)} sites of {data}; check the spelling"
        )
    source = "--sites" if names else f"the sites of {data}"
    names = names or present
    check_enough_clients(
        len(names),
        min_clients=resolved.federated.min_clients,
        source=source,
        fix="name two sites or more in --sites (or leave it out: every site)",
    )
    # Each node's own policy (a hospital would choose it): the run's budget, or the target ε the
    # coordinator calibrates σ to; its ledger lasts this run (`medpriv fl supernode` keeps one).
    nodes = site_nodes(resolved, names, seed=seed, privacy=resolved.privacy)
    job = job_from_config(
        resolved,
        out=out / "run",
        seed=seed,
        expected_clients=len(nodes),
        method=method,
        secagg=secagg,
    )
    path = job.write(out / "job.json")
    typer.echo(f"starting a SuperLink and {len(nodes)} SuperNodes ({', '.join(names)})")
    tls = _tls(ca_cert, tls_cert, tls_key, server=True)
    with LocalFederation(out, nodes, tls=tls) as federation:
        typer.echo(f"SuperLink at {federation.address}; PIDs {federation.pids()}")
        outcome = federation.run(path)
    if not outcome.completed:
        raise MedprivError(f"the run did not complete ({outcome.status}); logs in {out / 'logs'}")
    _print_rounds(out / "run" / "history.json")
    done = json.loads((out / "run" / "done.json").read_text())
    typer.echo(f"privacy: {done['privacy']['statement']}")
    _print_outcome(done, out / "run")
    typer.echo(f"every process stopped; results in {out / 'run'}")
