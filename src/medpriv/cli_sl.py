"""`medpriv sl`: split learning over the network — a server holding the middle of the network,
and a client (a hospital) training against it on its own data."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from medpriv.cli_common import one_line_errors
from medpriv.errors import MedprivError
from medpriv.train.split.limits import (
    CONNECTION_MINUTES,
    IDLE_MINUTES,
    MAX_LAYERS,
    MAX_PARAMETERS,
    MAX_SESSIONS,
    MAX_WIDTH,
    REQUEST_SECONDS,
    SESSIONS_PER_TOKEN,
)

sl_app = typer.Typer(
    pretty_exceptions_show_locals=False,  # locals may hold patient rows
    no_args_is_help=True,
    help="Split learning over gRPC: `medpriv sl server` and `medpriv sl client`.",
)


def _token(token_file: Path | None) -> str | None:
    """The shared token: from --token-file, else $MEDPRIV_SL_TOKEN, else none."""
    from medpriv.train.split.trainer import TOKEN_ENV

    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise MedprivError(f"{token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


@sl_app.command("server")
@one_line_errors
def server(
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port, printed)")] = 9300,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="file holding the shared token, or one token per line, one per client "
            "(else $MEDPRIV_SL_TOKEN)"
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain (TLS)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key (TLS)")] = None,
    max_mb: Annotated[float, typer.Option(help="largest message accepted, MiB")] = 64.0,
    max_width: Annotated[int, typer.Option(help="widest layer of a server part")] = MAX_WIDTH,
    max_layers: Annotated[int, typer.Option(help="most layers in a server part")] = MAX_LAYERS,
    max_parameters: Annotated[
        int, typer.Option(help="most weights and biases in a server part")
    ] = MAX_PARAMETERS,
    max_sessions: Annotated[int, typer.Option(help="open sessions, all clients")] = MAX_SESSIONS,
    sessions_per_token: Annotated[
        int, typer.Option(help="open sessions per token; the oldest idle one makes room")
    ] = SESSIONS_PER_TOKEN,
    idle_minutes: Annotated[
        float, typer.Option(help="a session unused this long is closed")
    ] = IDLE_MINUTES,
    request_seconds: Annotated[
        float, typer.Option(help="time to receive one request, headers to last byte")
    ] = REQUEST_SECONDS,
    connection_minutes: Annotated[
        float, typer.Option(help="a connection is asked to reconnect after this long")
    ] = CONNECTION_MINUTES,
) -> None:
    """Serve split-learning sessions until Ctrl-C or SIGTERM."""
    import logging
    import math

    from medpriv.train.split.limits import ServerLimits
    from medpriv.train.split.server import SplitServer
    from medpriv.train.split.transport import serve

    if (tls_cert is None) != (tls_key is None):
        raise MedprivError("give both --tls-cert and --tls-key, or neither")
    if not math.isfinite(max_mb) or max_mb <= 0:
        raise MedprivError(f"--max-mb must be finite and positive, got {max_mb}")
    limits = ServerLimits(
        max_message_bytes=int(max_mb * 1024 * 1024),
        max_width=max_width,
        max_layers=max_layers,
        max_parameters=max_parameters,
        max_sessions=max_sessions,
        sessions_per_token=sessions_per_token,
        idle_minutes=idle_minutes,
        request_seconds=request_seconds,
        connection_minutes=connection_minutes,
    )
    secret = _token(token_file)
    tokens = tuple(dict.fromkeys(t.strip() for t in (secret or "").splitlines() if t.strip()))
    if not all(t.isascii() and t.isprintable() for t in tokens):
        raise MedprivError("tokens must be printable ASCII, one per line")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    state = SplitServer(tokens=tokens, limits=limits)
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    grpc_server, bound = serve(state, host=host, port=port, tls=tls)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    access = f"{len(tokens)} token{'s' if len(tokens) != 1 else ''}" if tokens else "no token"
    typer.echo(
        f"listening on {host}:{bound} ({'TLS' if tls else 'plain TCP'}, {access}; "
        f"{limits.sessions_per_token} sessions per token, {limits.max_sessions} in all, "
        f"closed after {limits.idle_minutes:g} min idle)",
    )
    stop.wait()
    grpc_server.stop(grace=2).wait()
    typer.echo("stopped")


@sl_app.command("client")
@one_line_errors
def client(
    server_address: Annotated[str, typer.Option("--server", help="the server, HOST:PORT")],
    data: Annotated[str, typer.Option("--data", help="this hospital's data spec")] = "synthetic",
    mode: Annotated[str, typer.Option(help="vanilla or ushaped (labels stay here)")] = "ushaped",
    cut: Annotated[int, typer.Option(help="hidden layers kept by the client")] = 1,
    noise: Annotated[float, typer.Option(help="σ of noise on the activations sent")] = 0.0,
    ca_cert: Annotated[
        Path | None, typer.Option(help="PEM CA certificate of the server's TLS")
    ] = None,
    target: Annotated[str | None, typer.Option(help="CSV: the outcome column")] = None,
    out: Annotated[str | None, typer.Option(help="parent folder of the run folder")] = None,
) -> None:
    """Train on this hospital's data against a split-learning server, evaluate, attack, report
    (the same pipeline as `medpriv run --methods split-ushaped --sl-server HOST:PORT`)."""
    from medpriv.cli import run as run_command
    from medpriv.config import DEFAULT_ATTACKS

    if mode not in ("vanilla", "ushaped"):
        raise MedprivError("--mode is vanilla or ushaped")
    run_command(
        data=data,
        target=target,
        methods="split" if mode == "vanilla" else "split-ushaped",
        out=out,
        cut=cut,
        sl_server=server_address,
        sl_ca_cert=ca_cert,
        activation_noise=noise,
        attacks=",".join([*DEFAULT_ATTACKS, "sl_reconstruction"]),
    )
