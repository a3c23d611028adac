"""A bare HTTP/2 client that opens gRPC calls and stalls them: each call sends its headers and
the first bytes of a message that never finishes (what a slow or hostile client does). It only
writes what it must (preface, settings and ping acks, headers, one data frame) and records, per
stream, the reply bytes and when the server ended the stream."""

from __future__ import annotations

import socket
import struct
import threading
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream)
    return head + payload


def _hpack_int(value: int, prefix_bits: int = 7) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out, value = bytearray((limit,)), value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes((*out, value))


def _literal(name: str, value: str) -> bytes:
    """An HPACK 'literal header field without indexing, new name' (no Huffman coding)."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(raw_name)) + raw_name + _hpack_int(len(raw_value)) + raw_value


class StalledCalls:
    """`calls` gRPC calls to `path` on one connection, each stuck after `sent` of the `declared`
    bytes of its message. `ended[stream]` is the monotonic time the server ended that stream."""

    def __init__(
        self,
        port: int,
        path: str,
        *,
        calls: int,
        token: str = "",
        declared: int = 1 << 16,
        sent: int = 16,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.started = time.monotonic()
        self.ended: dict[int, float] = {}
        self.replies: dict[int, bytes] = {}
        self.goaway_at: float | None = None
        self.closed_at: float | None = None
        self._lock = threading.Lock()
        self._send(PREFACE + _frame(SETTINGS, 0, 0))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if token:
            headers.append(("authorization", f"Bearer {token}"))
        block = b"".join(_literal(k, v) for k, v in headers)
        body = b"\x00" + struct.pack(">I", declared) + bytes(sent)
        self.streams = [2 * i + 1 for i in range(calls)]
        for stream in self.streams:
            self._send(_frame(HEADERS, END_HEADERS, stream, block))
            self._send(_frame(DATA, 0, stream, body))

    def _send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def _read(self) -> None:
        try:
            while True:
                head = self._exactly(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = self._exactly(length)
                now = time.monotonic()
                if kind == SETTINGS and not flags & ACK:
                    self._send(_frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    self._send(_frame(PING, ACK, 0, payload))
                elif kind == DATA:
                    self.replies[stream] = self.replies.get(stream, b"") + payload
                elif kind == GOAWAY and self.goaway_at is None:
                    self.goaway_at = now
                if (kind in (DATA, HEADERS) and flags & END_STREAM) or kind == RST_STREAM:
                    self.ended.setdefault(stream, now)
        except OSError:
            pass
        self.closed_at = time.monotonic()

    def message(self, stream: int) -> bytes:
        """The gRPC message the server sent on `stream` (its 5-byte prefix removed)."""
        return self.replies.get(stream, b"")[5:]

    def close(self) -> None:
        self.sock.close()
        self._reader.join(5)
