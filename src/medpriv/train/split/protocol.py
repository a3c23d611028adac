"""The split-learning wire format, shared by the in-process and gRPC transports.

A message is bytes: the magic `MPSL`, a version (u16), the header length (u32), a JSON header,
then the raw buffers of the arrays the header lists (dtype and shape per array, C order, little
endian). Nothing is pickled; only the dtypes in `DTYPES` are accepted, and a message whose
declared arrays do not add up to exactly its size is refused.

Header fields: `op` (what to do, or `ok` / `error` in a reply), `id` (request id, echoed in the
reply), `session`, `seq` (per-session order: each request's seq is the previous one's plus 1),
`token` (shared secret, if the server requires one), `meta` (small JSON values) and `arrays`.

`decode` refuses, with a ProtocolError saying why, anything that is not exactly such a message:
a header that is not UTF-8 JSON, nests deeper than `MAX_HEADER_DEPTH`, holds NaN or infinite
numbers, whole numbers outside int64 or fields of the wrong type; more than `MAX_ARRAYS`
arrays; shapes with negative or non-integer dimensions, or whose dimensions multiply (zeros
aside) past the message size limit. It never raises anything else, and its work is linear in
the message's size.
"""

from __future__ import annotations

import json
import math
import re
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
MAX_HEADER_DEPTH = 8  # nested JSON objects and lists (a real header needs 4)
MAX_ARRAYS = 1024
MAX_NDIM = 8
MAX_OP_CHARS = 32
INT64_MAX = (1 << 63) - 1
DTYPES = ("float32", "float64", "int64", "int32", "uint8")
_PREFIX = struct.Struct("<4sHI")
# A JSON string (skipped whole; an unterminated one runs to the end, so a scan is linear) or a
# bracket: enough to measure nesting before parsing.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


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
    arrays = [np.asarray(a, order="C") for a in message.arrays]  # keeps 0-d arrays 0-d
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
    header = parse_header(bytes(data[_PREFIX.size : _PREFIX.size + header_len]))
    op = _field(header, "op", str, "")
    if not op or len(op) > MAX_OP_CHARS:
        raise ProtocolError(f"header 'op' must be a name of 1 to {MAX_OP_CHARS} characters")
    request_id, seq = _field(header, "id", int, 0), _field(header, "seq", int, 0)
    if request_id < 0 or seq < 0:
        raise ProtocolError("header 'id' and 'seq' must not be negative")
    session, token = _field(header, "session", str, ""), _field(header, "token", str, "")
    meta, specs = _field(header, "meta", dict, {}), _field(header, "arrays", list, [])
    arrays = _read_arrays(memoryview(data)[_PREFIX.size + header_len :], specs, max_bytes)
    return Envelope(op, arrays, meta, id=request_id, session=session, seq=seq, token=token)


def parse_header(raw: bytes) -> dict[str, Any]:
    """The header's JSON object: UTF-8, at most `MAX_HEADER_DEPTH` deep, finite numbers,
    whole numbers within int64."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("header is not UTF-8") from None
    depth = 0
    for match in _STRUCTURE.finditer(text):
        bracket = match.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                raise ProtocolError(f"header nests deeper than {MAX_HEADER_DEPTH} levels")
        elif bracket in ("]", "}"):
            depth -= 1
    try:
        header = json.loads(
            text, parse_float=_finite, parse_int=_int64, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    return header


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _int64(text: str) -> int:
    if len(text) > 20 or not -INT64_MAX - 1 <= (value := int(text)) <= INT64_MAX:
        raise ValueError(f"whole number {text[:20]} is outside int64")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a number")


def _field(header: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = header.get(name, default)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ProtocolError(f"header {name!r} must be of type {kind.__name__}")
    return value


def _read_arrays(body: memoryview, specs: list[Any], max_bytes: int) -> list[np.ndarray]:
    if len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"{len(specs)} arrays; at most {MAX_ARRAYS} are accepted")
    arrays, offset = [], 0
    for i, spec in enumerate(specs):
        dtype = spec.get("dtype") if isinstance(spec, dict) else None
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(dtype, str) or not isinstance(shape, list):
            raise ProtocolError(f"array {i}: needs a dtype and a shape")
        if dtype not in DTYPES:
            raise ProtocolError(f"array {i}: dtype {dtype!r} is not accepted")
        if len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ProtocolError(f"array {i}: bad shape (at most {MAX_NDIM} whole numbers >= 0)")
        if math.prod(d for d in shape if d) > max_bytes:
            raise ProtocolError(f"array {i}: shape too large for a message")
        kind = np.dtype(dtype).newbyteorder("<")
        count = math.prod(shape)  # Python integers: no overflow
        if count * kind.itemsize > len(body) - offset:
            raise ProtocolError(f"array {i}: the message ends before its {count} values")
        arrays.append(
            np.frombuffer(body, dtype=kind, count=count, offset=offset).reshape(shape).astype(dtype)
        )
        offset += count * kind.itemsize
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
