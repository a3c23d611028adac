"""A Flower deployment on this machine: SuperLink and SuperNodes as real processes, `flwr run`,
and every process stopped by PID — for `medpriv fl` and the tests.

Each process gets its own FLWR_HOME, a log file, and its own session (so its Flower children,
flower-superexec and flwr-clientapp, are stopped with it). Readiness: the SuperLink's /health
endpoint answers; a SuperNode has logged its node id. Nothing here imports flwr.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medpriv.files import write_text_atomic
from medpriv.processes import Process, ProcessError, free_port, wait_until

if TYPE_CHECKING:
    from medpriv.train.federated.policy import ClientPolicy

APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "medpriv-federated"
version = "1.0.0"
description = "medpriv federated training (the code lives in the installed medpriv package)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "medpriv"

[tool.flwr.app.components]
serverapp = "medpriv.train.federated.flower_app:server_app"
clientapp = "medpriv.train.federated.flower_client:client_app"

[tool.flwr.app.config]
job = ""
"""


class DeploymentError(ProcessError):
    """A Flower process did not start, or a run did not complete."""


def executable(name: str) -> str:
    """A console script of this environment (flower-superlink, flower-supernode, flwr)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DeploymentError(f"{name} not found next to {sys.executable}; is flwr installed?")
    return str(path)


def flower_env(home: Path) -> dict[str, str]:
    """The environment of a Flower process: its own FLWR_HOME, no update check or telemetry,
    this environment's scripts first on PATH (Flower starts its helpers by name)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


@dataclass(frozen=True)
class Tls:
    """TLS for a Flower deployment: the CA certificate every party trusts, and (on the
    coordinator) the SuperLink's certificate and key. Without it, traffic is plain `--insecure`."""

    ca_certificate: Path
    certificate: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        for path in (self.ca_certificate, self.certificate, self.key):
            if path is not None and not Path(path).is_file():
                raise DeploymentError(f"TLS file not found: {path}")

    def superlink_args(self) -> list[str]:
        if self.certificate is None or self.key is None:
            raise DeploymentError("a TLS SuperLink needs its certificate and key")
        return [
            "--ssl-ca-certfile",
            str(Path(self.ca_certificate).resolve()),
            "--ssl-certfile",
            str(Path(self.certificate).resolve()),
            "--ssl-keyfile",
            str(Path(self.key).resolve()),
        ]

    def client_args(self) -> list[str]:
        return ["--root-certificates", str(Path(self.ca_certificate).resolve())]


def security_args(tls: Tls | None, *, server: bool) -> list[str]:
    """`--insecure`, or the TLS arguments of a SuperLink (`server`) or a SuperNode."""
    if tls is None:
        return ["--insecure"]
    return tls.superlink_args() if server else tls.client_args()


def wait_healthy(
    port: int, tls: Tls | None, *, alive: Callable[[], bool], timeout: float = 60
) -> None:
    """Until the SuperLink on `port` answers /health (DeploymentError when it dies or takes
    longer than `timeout` seconds)."""
    wait_until(lambda: alive() and _healthy(port, tls), timeout=timeout, what="the SuperLink")


def _healthy(port: int, tls: Tls | None = None) -> bool:
    scheme, context = "http", None
    if tls is not None:
        scheme, context = "https", ssl.create_default_context(cafile=str(tls.ca_certificate))
    try:
        with urllib.request.urlopen(
            f"{scheme}://127.0.0.1:{port}/health", timeout=1, context=context
        ) as reply:
            return reply.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class NodeSpec:
    """One SuperNode: its data (a medpriv data spec), site, optional CSV options, its own
    privacy policy (what DP recipes it accepts), the file that keeps its privacy ledger and, where
    the SuperLink authenticates nodes, its private key (`create_node_key`)."""

    data: str
    site: str | None = None
    split_seed: int | None = None
    options: dict[str, str | float] = field(default_factory=dict)
    policy: ClientPolicy | None = None
    ledger: str | Path | None = None
    key: str | Path | None = None

    def node_config(self) -> str:
        """Flower's --node-config: space-separated TOML-typed key=value pairs."""
        values: dict[str, str | int | float | bool] = {"data": self.data, **self.options}
        if self.site is not None:
            values["site"] = self.site
        if self.split_seed is not None:
            values["split-seed"] = self.split_seed
        if self.policy is not None:
            values.update(self.policy.node_config())
        if self.ledger is not None:
            values["privacy-ledger"] = str(Path(self.ledger).resolve())
        return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def create_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's key pair for Flower's node authentication: (private key, public key), an EC
    key on NIST P-384 in OpenSSH format (what `flower-supernode --auth-supernode-private-key` and
    `flwr supernode register` read). The private key is readable by its owner only; the public
    key goes to the coordinator's allow-list."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or "/" in name or name.startswith("."):
        raise DeploymentError(f"a key name is a plain file name, got {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / name, folder / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise DeploymentError(f"{path} exists; a key pair is never overwritten")
    key = ec.generate_private_key(ec.SECP384R1())
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return private, public


def register_node_keys(
    workdir: Path, *, superlink: str, keys: list[Path], tls: Tls, timeout: float = 60
) -> None:
    """`flwr supernode register KEY.pub` for every public key of the allow-list, on a SuperLink
    started with node authentication; a key that cannot be registered raises with Flower's
    reason."""
    home = workdir / "home" / "cli"
    write_text_atomic(cli_config(superlink, tls), home / "config.toml")
    for key in keys:
        done = subprocess.run(
            [executable("flwr"), "supernode", "register", str(Path(key).resolve()), "local"],
            env=flower_env(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise DeploymentError(
                f"could not register the SuperNode key {key}: "
                f"{(done.stdout + done.stderr).strip()[-500:]}"
            )


def start_superlink(
    workdir: Path,
    *,
    port: int | None = None,
    timeout: float = 60,
    tls: Tls | None = None,
    node_auth: bool = False,
) -> Process:
    """The SuperLink; with `node_auth`, only SuperNodes whose public key was registered
    (`register_node_keys`) may join — Flower allows that over TLS only."""
    if node_auth and tls is None:
        raise DeploymentError("SuperNode authentication needs TLS: give the SuperLink a TLS cert")
    port = port or free_port()
    process = Process(
        "superlink",
        [
            executable("flower-superlink"),
            *security_args(tls, server=True),
            *(["--enable-supernode-auth"] if node_auth else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-runtime-dependency-installation",
        ],
        env=flower_env(workdir / "home" / "superlink"),
        log=workdir / "logs" / "superlink.log",
        port=port,
    )
    try:
        wait_healthy(port, tls, alive=process.alive, timeout=timeout)
    except ProcessError:  # timed out (or died): say why from its log
        process.stop()
        raise DeploymentError(f"the SuperLink did not start:\n{process.log()[-2000:]}") from None
    return process


def start_supernode(
    workdir: Path,
    name: str,
    node: NodeSpec,
    *,
    superlink: str,
    port: int | None = None,
    tls: Tls | None = None,
) -> Process:
    return Process(
        f"supernode-{name}",
        [
            executable("flower-supernode"),
            *security_args(tls, server=False),
            *node_key_args(node),
            "--superlink",
            superlink,
            "--host",
            "127.0.0.1",
            "--port",
            str(port or free_port()),
            "--node-config",
            node.node_config(),
        ],
        env=flower_env(workdir / "home" / f"node-{name}"),
        log=workdir / "logs" / f"supernode-{name}.log",
    )


def node_key_args(node: NodeSpec) -> list[str]:
    """`--auth-supernode-private-key KEY` for a node with a key."""
    if node.key is None:
        return []
    if not Path(node.key).is_file():
        raise DeploymentError(f"SuperNode key not found: {node.key}")
    return ["--auth-supernode-private-key", str(Path(node.key).resolve())]


def wait_for_nodes(nodes: list[Process], *, timeout: float = 60) -> None:
    def ready() -> bool:
        dead = [n for n in nodes if not n.alive()]
        if dead:
            raise DeploymentError(f"{dead[0].name} exited:\n{dead[0].log()[-2000:]}")
        return all("SuperNode ID" in n.log() for n in nodes)

    wait_until(ready, timeout=timeout, what="the SuperNodes to register")


def write_app(folder: Path) -> Path:
    """The Flower app folder `flwr run` ships: a pyproject naming medpriv's components."""
    write_text_atomic(APP_PYPROJECT, folder / "pyproject.toml")
    return folder


@dataclass(frozen=True)
class RunOutcome:
    run_id: int | None
    status: str | None
    details: str | None
    log: str

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def cli_config(superlink: str, tls: Tls | None = None) -> str:
    """The `flwr` CLI's config.toml: the SuperLink's address, and how to reach it."""
    security = (
        "insecure = true\n"
        if tls is None
        else f"root-certificates = {json.dumps(str(Path(tls.ca_certificate).resolve()))}\n"
    )
    return (
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "{superlink}"\n' + security
    )


def flwr_run(
    workdir: Path,
    *,
    superlink: str,
    job_path: Path,
    timeout: float = 600,
    tls: Tls | None = None,
    ls_timeout: float = 60,
) -> RunOutcome:
    """`flwr run --stream` the medpriv app with this job; the status comes from `flwr ls`
    (flwr run exits 0 even when the run failed). A run still going after `timeout` seconds is
    stopped on the SuperLink and a one-line DeploymentError raised; so is a `flwr ls` that does
    not answer."""
    home = workdir / "home" / "cli"
    write_text_atomic(cli_config(superlink, tls), home / "config.toml")
    app = write_app(workdir / "app")
    env = flower_env(home)
    log_path = workdir / "logs" / "flwr-run.log"
    command = [
        executable("flwr"),
        "run",
        str(app),
        "local",
        "--run-config",
        f"job={json.dumps(str(job_path))}",
        "--stream",
    ]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        log = f"{_text(exc.stdout)}{_text(exc.stderr)}\nflwr run timed out after {timeout:g} s\n"
        run_id = _started_run(log)
        stopped = "" if run_id is None else stop_run(run_id, env)
        write_text_atomic(log + stopped, log_path)
        what = "before a run started" if run_id is None else _stop_summary(run_id, stopped)
        raise DeploymentError(
            f"flwr run timed out after {timeout:g} s {what}; log: {log_path}"
        ) from None
    log = done.stdout + done.stderr
    write_text_atomic(log, log_path)
    run_id = _started_run(log)
    if run_id is None:
        return RunOutcome(None, None, "the run was not started", log)
    try:
        listing = subprocess.run(
            [executable("flwr"), "ls", "local", "--run-id", str(run_id), "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=ls_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeploymentError(
            f"flwr ls did not answer within {ls_timeout:g} s, so the status of run {run_id} is "
            f"unknown: check the SuperLink at {superlink}; log: {log_path}"
        ) from None
    try:
        run = json.loads(listing.stdout)["runs"][0]
        return RunOutcome(run_id, run["status"], run.get("status-details"), log)
    except (ValueError, KeyError, IndexError):
        return RunOutcome(run_id, None, f"cannot read flwr ls: {listing.stdout[-500:]}", log)


STOPPED = "flwr stop: stopped"


def stop_run(run_id: int, env: dict[str, str], *, timeout: float = 60) -> str:
    """`flwr stop RUN_ID` on the SuperLink of `env`'s CLI config; a log line saying what
    happened (`STOPPED` when the SuperLink confirmed)."""
    try:
        done = subprocess.run(
            [executable("flwr"), "stop", str(run_id), "local"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"flwr stop: no answer within {timeout:g} s\n"
    if done.returncode != 0:
        return f"flwr stop: exit {done.returncode}\n{done.stdout}{done.stderr}\n"
    return STOPPED + "\n"


def _stop_summary(run_id: int, stopped: str) -> str:
    if stopped.startswith(STOPPED):
        return f"and run {run_id} was stopped on the SuperLink"
    return f"and stopping run {run_id} failed: stop it with `flwr stop {run_id}`"


def _started_run(log: str) -> int | None:
    """The run id `flwr run` printed, if it got that far."""
    found = re.search(r"Successfully started run (\d+)", log)
    return None if found is None else int(found.group(1))


def _text(output: str | bytes | None) -> str:
    """Output a timed-out subprocess left (bytes on POSIX, even with text=True)."""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


class LocalFederation:
    """A SuperLink and one SuperNode per NodeSpec on 127.0.0.1; a context manager that stops
    every process by PID on exit."""

    def __init__(
        self,
        workdir: Path,
        nodes: dict[str, NodeSpec],
        *,
        tls: Tls | None = None,
        allowed_keys: list[Path] | None = None,
    ) -> None:
        """With `allowed_keys` (public keys), the SuperLink authenticates SuperNodes and admits
        only those keys (TLS required)."""
        self.workdir, self.nodes, self.tls = Path(workdir), nodes, tls
        self.allowed_keys = allowed_keys
        self.superlink: Process | None = None
        self.supernodes: dict[str, Process] = {}

    @property
    def address(self) -> str:
        assert self.superlink is not None
        return f"127.0.0.1:{self.superlink.port}"

    def __enter__(self) -> LocalFederation:
        try:
            auth = self.allowed_keys is not None
            self.superlink = start_superlink(self.workdir, tls=self.tls, node_auth=auth)
            if auth:
                assert self.tls is not None and self.allowed_keys is not None
                register_node_keys(
                    self.workdir, superlink=self.address, keys=self.allowed_keys, tls=self.tls
                )
            for name, node in self.nodes.items():
                self.supernodes[name] = start_supernode(
                    self.workdir, name, node, superlink=self.address, tls=self.tls
                )
            wait_for_nodes(list(self.supernodes.values()))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pids(self) -> list[int]:
        procs = [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]
        return [p.pid for p in procs]

    def stop(self) -> None:
        for process in [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]:
            process.stop()

    def run(self, job_path: Path, *, timeout: float = 600) -> RunOutcome:
        return flwr_run(
            self.workdir,
            superlink=self.address,
            job_path=job_path,
            timeout=timeout,
            tls=self.tls,
        )
