"""The split-learning wire format, shared by the in-process and gRPC transports.

A message is bytes: the magic `MPSL`, a version (u16), the header length (u32), a JSON header,
then the raw buffers of the arrays the header lists (dtype and shape per array, C order, little
endian). Nothing is pickled; only the dtypes in `DTYPES` are accepted, and a message whose
declared arrays do not add up to exactly its size is refused.

Header fields: `op` (what to do, or `ok` / `error` in a reply), `id` (request id, echoed in the
reply), `session`, `seq` (per-session order: each request's seq is the previous one's plus 1),
`token` (shared secret, if the server requires one), `meta` (small JSON values) and `arrays`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medpriv.errors import ProtocolError

MAGIC = b"MPSL"
VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
DTYPES = ("float32", "float64", "int64", "int32", "uint8")
_PREFIX = struct.Struct("<4sHI")


@dataclass
class Envelope:
    """One request or reply."""

    op: str
    arrays: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    session: str = ""
    seq: int = 0
    token: str = ""

    def reply(self, arrays: Sequence[np.ndarray] = (), **meta: Any) -> Envelope:
        return Envelope("ok", list(arrays), dict(meta), id=self.id, session=self.session)

    def error(self, message: str) -> Envelope:
        return Envelope("error", [], {"error": message}, id=self.id, session=self.session)


def encode(message: Envelope, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """The message as bytes (ProtocolError if an array has an unsupported dtype or the whole
    exceeds `max_bytes`)."""
    arrays = [np.ascontiguousarray(a) for a in message.arrays]
    specs = []
    for a in arrays:
        if a.dtype.name not in DTYPES:
            raise ProtocolError(f"arrays of dtype {a.dtype} cannot be sent; use {DTYPES}")
        specs.append({"dtype": a.dtype.name, "shape": list(a.shape)})
    header = json.dumps(
        {
            "op": message.op,
            "id": message.id,
            "session": message.session,
            "seq": message.seq,
            "token": message.token,
            "meta": message.meta,
            "arrays": specs,
        },
        separators=(",", ":"),
    ).encode()
    body = b"".join(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in arrays)
    size = _PREFIX.size + len(header) + len(body)
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {max_bytes}")
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + body


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """Parse and check a message; anything malformed is a ProtocolError saying what."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    if len(data) < _PREFIX.size:
        raise ProtocolError("message too short for its prefix")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError("not a medpriv split-learning message (bad magic)")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this is {VERSION})")
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise ProtocolError("header length out of range")
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + header_len])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    try:
        op, specs = str(header["op"]), header.get("arrays", [])
        request_id, seq = int(header.get("id", 0)), int(header.get("seq", 0))
        session, token = str(header.get("session", "")), str(header.get("token", ""))
        meta = header.get("meta", {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad header field: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(specs, list):
        raise ProtocolError("header 'meta' must be an object and 'arrays' a list")
    arrays = _read_arrays(memoryview(data)[_PREFIX.size + header_len :], specs)
    return Envelope(op, arrays, meta, id=request_id, session=session, seq=seq, token=token)


def _read_arrays(body: memoryview, specs: list) -> list[np.ndarray]:
    arrays, offset = [], 0
    for i, spec in enumerate(specs):
        try:
            dtype, shape = str(spec["dtype"]), tuple(int(d) for d in spec["shape"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"array {i}: needs a dtype and a shape") from None
        if dtype not in DTYPES:
            raise ProtocolError(f"array {i}: dtype {dtype!r} is not accepted")
        if any(d < 0 for d in shape) or len(shape) > 8:
            raise ProtocolError(f"array {i}: bad shape {list(shape)}")
        kind = np.dtype(dtype).newbyteorder("<")
        size = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
        if offset + size > len(body):
            raise ProtocolError(f"array {i}: the message ends before its {size} bytes")
        arrays.append(
            np.frombuffer(body, dtype=kind, count=size // kind.itemsize, offset=offset)
            .reshape(shape)
            .astype(dtype)
        )
        offset += size
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} bytes after the last array")
    return arrays


def expect(message: Envelope, count: int, *, dtypes: Mapping[int, str] | None = None) -> None:
    """Check a request carries `count` arrays (and, per index, the dtype kind given:
    'float' or 'int')."""
    if len(message.arrays) != count:
        raise ProtocolError(f"{message.op}: expected {count} arrays, got {len(message.arrays)}")
    for index, kind in (dtypes or {}).items():
        got = message.arrays[index].dtype
        ok = np.issubdtype(got, np.floating) if kind == "float" else np.issubdtype(got, np.integer)
        if not ok:
            raise ProtocolError(f"{message.op}: array {index} must be {kind}, got {got}")
