"""The gRPC server of `medpriv sl server`: an asyncio gRPC server on a thread of its own, in
front of a `SplitServer`.

* Authentication before work: a call's token is read from its metadata (`authorization: Bearer
  TOKEN`) as soon as its headers arrive; a call without an accepted token gets the protocol's
  error reply and its payload is never read.
* Time: the payload must arrive within `request_seconds` of the headers, whatever deadline the
  client chose (else DEADLINE_EXCEEDED); a connection is sent away (GOAWAY) after
  `connection_minutes`, its calls then get `request_seconds` to finish; idle connections close
  after `IDLE_CONNECTION_SECONDS`, silent peers after a missed keepalive ping, and a TLS/HTTP/2
  handshake must finish within `HANDSHAKE_SECONDS`.
* Capacity: a call waiting for its payload is a coroutine, not a thread; only fully received,
  authenticated requests reach the `workers` threads, so stalled calls cannot starve them. At
  most `max_rpcs` calls are in flight (the rest get RESOURCE_EXHAUSTED at once),
  `streams_per_connection` per connection, and `MAX_CONNECTIONS` connections.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from medpriv.errors import ProtocolError
from medpriv.train.split.limits import ServerLimits
from medpriv.train.split.protocol import Envelope, encode
from medpriv.train.split.server import SplitServer
from medpriv.train.split.transport import (
    SERVICE,
    TOKEN_METADATA,
    TOKEN_SCHEME,
    message_options,
)
from medpriv.untrusted import printable

log = logging.getLogger(__name__)
HANDSHAKE_SECONDS = 10.0
IDLE_CONNECTION_SECONDS = 300.0
KEEPALIVE_SECONDS = 60.0  # the server pings a connection this often...
KEEPALIVE_TIMEOUT_SECONDS = 20.0  # ... and drops it when the answer is this late
MAX_CONNECTIONS = 256
MAX_METADATA_BYTES = 16 * 1024
START_SECONDS = 30.0


def server_options(limits: ServerLimits) -> list[tuple[str, int]]:
    """gRPC core options that bound connections and streams."""

    def ms(seconds: float) -> int:
        return max(1, int(seconds * 1000))

    return [
        *message_options(limits.max_message_bytes),
        ("grpc.max_concurrent_streams", limits.streams_per_connection),
        ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
        ("grpc.max_connection_age_ms", ms(limits.connection_minutes * 60)),
        ("grpc.max_connection_age_grace_ms", ms(limits.request_seconds)),
        ("grpc.max_connection_idle_ms", ms(IDLE_CONNECTION_SECONDS)),
        ("grpc.keepalive_time_ms", ms(KEEPALIVE_SECONDS)),
        ("grpc.keepalive_timeout_ms", ms(KEEPALIVE_TIMEOUT_SECONDS)),
        ("grpc.server_handshake_timeout_ms", ms(HANDSHAKE_SECONDS)),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ]


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of an `authorization: Bearer TOKEN` entry ('' when there is none)."""
    for key, value in metadata or ():
        if key == TOKEN_METADATA and isinstance(value, str) and value.startswith(TOKEN_SCHEME):
            return value[len(TOKEN_SCHEME) :]
    return ""


class _Service:
    """The one method, `Call`: authenticate, receive within the deadline, handle on a worker."""

    def __init__(self, server: SplitServer, workers: ThreadPoolExecutor) -> None:
        self.server, self.workers = server, workers

    async def call(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        try:
            self.server.authenticate(bearer_token(context.invocation_metadata()))
        except ProtocolError as exc:
            self.server.refusals.warning(
                "refused a call from %s before reading it: %s", printable(context.peer()), exc
            )
            return encode(Envelope("error", meta={"error": str(exc)}))
        seconds = self.server.limits.request_seconds
        try:
            data = await asyncio.wait_for(context.read(), seconds)
        except asyncio.TimeoutError:
            self.server.refusals.warning(
                "dropped a call from %s: no complete request within %g s",
                printable(context.peer()),
                seconds,
            )
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"request not received within {seconds:g} s"
            )
        if not isinstance(data, bytes):  # the client ended the call without a message
            return encode(Envelope("error", meta={"error": "malformed request: empty call"}))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.workers, self.server.handle, data)


class RunningServer:
    """A started gRPC server: its event loop thread and its worker threads."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        workers: ThreadPoolExecutor,
    ) -> None:
        self.loop, self.thread, self.workers = loop, thread, workers
        self.grpc: grpc.aio.Server | None = None

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop accepting calls, give those in flight `grace` seconds, end the threads.
        Returns a set Event (as `grpc.Server.stop` returns one to wait on)."""
        done = threading.Event()
        if self.thread.is_alive():
            if self.grpc is not None:
                stopping = asyncio.run_coroutine_threadsafe(self.grpc.stop(grace), self.loop)
                stopping.result((grace or 0) + START_SECONDS)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(START_SECONDS)
        self.workers.shutdown(wait=False, cancel_futures=True)
        done.set()
        return done


def serve(
    server: SplitServer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: tuple[Path, Path] | None = None,
) -> tuple[RunningServer, int]:
    """Start serving `server` on host:port (0 = any free port); returns (server, bound port).
    `tls` = (certificate chain, private key) PEM files."""
    limits = server.limits
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="split-grpc", daemon=True)
    workers = ThreadPoolExecutor(limits.workers, thread_name_prefix="split-worker")
    running = RunningServer(loop, thread, workers)
    thread.start()
    credentials = None
    if tls is not None:
        chain, key = (Path(p).read_bytes() for p in tls)
        credentials = grpc.ssl_server_credentials([(key, chain)])

    async def start() -> int:
        grpc_server = grpc.aio.server(
            options=server_options(limits), maximum_concurrent_rpcs=limits.max_rpcs
        )
        service = _Service(server, workers)
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Call": grpc.stream_unary_rpc_method_handler(service.call)}
        )
        grpc_server.add_generic_rpc_handlers((handler,))
        address = f"{host}:{port}"
        try:
            if credentials is not None:
                bound = grpc_server.add_secure_port(address, credentials)
            else:
                bound = grpc_server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise ProtocolError(f"cannot listen on {address}")
        await grpc_server.start()
        running.grpc = grpc_server
        return bound

    try:
        bound = asyncio.run_coroutine_threadsafe(start(), loop).result(START_SECONDS)
    except BaseException:
        running.stop(grace=None)
        raise
    return running, bound
