"""How split-learning messages travel: in this process (for sweeps) or over gRPC on TCP.

gRPC carries our bytes as they are (a generic unary method, no protobuf codegen); TLS is
optional (`--tls-cert/--tls-key` on the server, the CA certificate on the client). The shared
token travels inside each message (`medpriv.train.split.protocol`) and, over gRPC, also in the
call's metadata (`authorization: Bearer TOKEN`), so that the server can turn away a call without
an accepted token before reading its payload (`medpriv.train.split.serving`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc

from medpriv.errors import ProtocolError
from medpriv.train.split.protocol import MAX_MESSAGE_BYTES
from medpriv.train.split.server import SplitServer

if TYPE_CHECKING:
    from medpriv.train.split.serving import RunningServer

SERVICE = "medpriv.split.v1.Split"
METHOD = f"/{SERVICE}/Call"
TOKEN_METADATA = "authorization"
TOKEN_SCHEME = "Bearer "
_SLACK = 1 << 20  # gRPC's own limit sits above ours, so oversize requests get our error reply


class Transport(Protocol):
    def call(self, data: bytes, *, token: str = "") -> bytes:
        """Send one encoded request and return the encoded reply; `token` is the one the
        request carries (a transport may also present it outside the message)."""
        ...

    def close(self) -> None: ...


class InProcessTransport:
    """Hands the bytes to a server object in this process (the same encode/decode path)."""

    def __init__(self, server: SplitServer | None = None) -> None:
        self.server = server or SplitServer()

    def call(self, data: bytes, *, token: str = "") -> bytes:
        return self.server.handle(data)

    def close(self) -> None:
        return None


def message_options(max_bytes: int) -> list[tuple[str, int]]:
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
        options = message_options(max_bytes)
        if ca_certificate is not None:
            credentials = grpc.ssl_channel_credentials(Path(ca_certificate).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._call = self.channel.unary_unary(METHOD)

    def call(self, data: bytes, *, token: str = "") -> bytes:
        if token and not (token.isascii() and token.isprintable()):
            raise ProtocolError("the split-learning token must be printable ASCII")
        metadata = ((TOKEN_METADATA, TOKEN_SCHEME + token),) if token else None
        try:
            return self._call(data, timeout=self.timeout, metadata=metadata)
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
    tls: tuple[Path, Path] | None = None,
) -> tuple[RunningServer, int]:
    """Start serving `server` on host:port (0 = any free port); returns (server, port).
    `tls` = (certificate chain, private key) PEM files. See `medpriv.train.split.serving`."""
    from medpriv.train.split.serving import serve as start

    return start(server, host=host, port=port, tls=tls)
