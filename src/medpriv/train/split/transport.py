"""How split-learning messages travel: in this process (for sweeps) or over gRPC on TCP.

gRPC carries our bytes as they are (a generic unary method, no protobuf codegen); TLS is
optional (`--tls-cert/--tls-key` on the server, the CA certificate on the client) and the shared
token travels inside each message (`medpriv.train.split.protocol`).
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import Protocol

import grpc

from medpriv.errors import ProtocolError
from medpriv.train.split.protocol import MAX_MESSAGE_BYTES
from medpriv.train.split.server import SplitServer

SERVICE = "medpriv.split.v1.Split"
METHOD = f"/{SERVICE}/Call"
_SLACK = 1 << 20  # gRPC's own limit sits above ours, so oversize requests get our error reply


class Transport(Protocol):
    def call(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


class InProcessTransport:
    """Hands the bytes to a server object in this process (the same encode/decode path)."""

    def __init__(self, server: SplitServer | None = None) -> None:
        self.server = server or SplitServer()

    def call(self, data: bytes) -> bytes:
        return self.server.handle(data)

    def close(self) -> None:
        return None


def _options(max_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_bytes + _SLACK),
        ("grpc.max_receive_message_length", max_bytes + _SLACK),
    ]


class GrpcTransport:
    """A client channel to `medpriv sl server`."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 60.0,
        max_bytes: int = MAX_MESSAGE_BYTES,
        ca_certificate: Path | None = None,
    ) -> None:
        self.address, self.timeout = address, timeout
        options = _options(max_bytes)
        if ca_certificate is not None:
            credentials = grpc.ssl_channel_credentials(Path(ca_certificate).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._call = self.channel.unary_unary(METHOD)

    def call(self, data: bytes) -> bytes:
        try:
            return self._call(data, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ProtocolError(
                f"split server at {self.address}: {exc.code().name}: {exc.details()}"
            ) from None

    def close(self) -> None:
        self.channel.close()


def serve(
    server: SplitServer,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 4,
    tls: tuple[Path, Path] | None = None,
) -> tuple[grpc.Server, int]:
    """Start serving `server` on host:port (0 = any free port); returns (gRPC server, port).
    `tls` = (certificate chain, private key) PEM files."""
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=_options(server.max_bytes)
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(lambda req, _ctx: server.handle(req))}
    )
    grpc_server.add_generic_rpc_handlers((handler,))
    address = f"{host}:{port}"
    if tls is not None:
        chain, key = (Path(p).read_bytes() for p in tls)
        bound = grpc_server.add_secure_port(address, grpc.ssl_server_credentials([(key, chain)]))
    else:
        bound = grpc_server.add_insecure_port(address)
    if bound == 0:
        raise ProtocolError(f"cannot listen on {address}")
    grpc_server.start()
    return grpc_server, bound
