"""The split-learning wire format and the server's refusals: every bad request gets an error
reply, and the server keeps serving its other sessions."""

from __future__ import annotations

import itertools
import json
import struct

import numpy as np
import pytest
import torch

from medpriv.errors import ProtocolError
from medpriv.train.split.client import RemotePart
from medpriv.train.split.protocol import Envelope, decode, encode
from medpriv.train.split.server import SplitServer
from medpriv.train.split.transport import InProcessTransport


def test_arrays_and_header_survive_the_round_trip():
    arrays = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([0, 1], dtype=np.int64),
        np.zeros((0, 4), dtype=np.float64),
    ]
    message = Envelope("train", arrays, {"k": [1, "a"]}, id=7, session="s", seq=3, token="t")
    back = decode(encode(message))
    assert (back.op, back.id, back.session, back.seq, back.token) == ("train", 7, "s", 3, "t")
    assert back.meta == {"k": [1, "a"]}
    for a, b in zip(arrays, back.arrays, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _with_header(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<4sHI", b"MPSL", 1, len(raw)) + raw + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"MPS", "too short"),
        (b"XXXX" + bytes(10), "bad magic"),
        (struct.pack("<4sHI", b"MPSL", 9, 2) + b"{}", "version 9"),
        (struct.pack("<4sHI", b"MPSL", 1, 50) + b"{}", "header length"),
        (struct.pack("<4sHI", b"MPSL", 1, 3) + b"{x}", "not JSON"),
        (_with_header({"op": "t", "arrays": [{"dtype": "object", "shape": [1]}]}), "object"),
        (_with_header({"op": "t", "arrays": [{"dtype": "float32", "shape": [4]}]}), "ends"),
        (_with_header({"op": "t", "arrays": []}, b"junk"), "after the last array"),
        (_with_header({"op": "t", "arrays": [{"dtype": "float32", "shape": [-1]}]}), "shape"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode(data)


def test_the_size_limit_applies_both_ways():
    big = Envelope("train", [np.zeros(1000, dtype=np.float64)])
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        encode(big, max_bytes=4000)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(encode(big), max_bytes=4000)


def _open(server: SplitServer, mode: str = "vanilla", token: str = "") -> RemotePart:
    torch.manual_seed(0)
    remote = RemotePart(InProcessTransport(server), token=token)
    widths = [8, 4, 2] if mode == "vanilla" else [8, 4]
    weights = []
    for a, b in itertools.pairwise(widths):
        weights += [np.zeros((b, a), np.float32), np.zeros(b, np.float32)]
    remote.open(mode, widths, weights, {"optimizer": "sgd", "lr": 0.1})
    return remote


def _reply(server: SplitServer, message: Envelope) -> Envelope:
    return decode(server.handle(encode(message)))


def test_the_server_refuses_bad_requests_and_keeps_serving(caplog):
    server = SplitServer(token="s3cret")
    good = _open(server, token="s3cret")
    other = _open(server, "ushaped", token="s3cret")
    h, y = np.ones((5, 8), np.float32), np.array([0, 1, 0, 1, 1])

    def refused(message: Envelope, why: str) -> None:
        reply = _reply(server, message)
        assert reply.op == "error" and why in reply.meta["error"], reply.meta

    sid = good.session
    refused(Envelope("train", [h, y], session=sid, seq=1), "unauthenticated")
    refused(Envelope("train", [h, y], session=sid, seq=1, token="wrong"), "unauthenticated")
    refused(Envelope("train", [h, y], session="nope", seq=1, token="s3cret"), "no open session")
    refused(Envelope("train", [h, y], session=sid, seq=5, token="s3cret"), "out of order")
    refused(Envelope("train", [h[:, :3], y], session=sid, seq=1, token="s3cret"), "shape")
    refused(Envelope("train", [h, y + 2], session=sid, seq=1, token="s3cret"), "labels")
    refused(Envelope("train", [h * np.nan, y], session=sid, seq=1, token="s3cret"), "NaN")
    refused(Envelope("forward", [h], session=sid, seq=1, token="s3cret"), "U-shaped op")
    refused(Envelope("fly", [], session=sid, seq=1, token="s3cret"), "unknown op")
    refused(Envelope("open", [], {"mode": "x", "widths": [8, 2]}, token="s3cret"), "mode")
    reply = decode(server.handle(b"garbage"))
    assert reply.op == "error" and "malformed" in reply.meta["error"]
    # U-shaped order: backward needs a pending forward.
    refused(
        Envelope(
            "backward", [np.ones((5, 4), np.float32)], session=other.session, seq=1, token="s3cret"
        ),
        "without a pending",
    )
    # After all that, both sessions still work (refused requests do not advance seq).
    grad, logits = good.train(h, y)
    assert grad.shape == (5, 8) and logits.shape == (5, 2)
    other.seq = 0
    z = other.forward(h)
    assert other.backward(np.ones_like(z)).shape == (5, 8)
    assert not any(str(h.sum()) in record.getMessage() for record in caplog.records)


def test_a_full_server_makes_room_by_dropping_idle_sessions():
    server = SplitServer(max_sessions=2, idle_timeout=60.0)
    first, _ = _open(server), _open(server)
    with pytest.raises(ProtocolError, match="server full"):
        _open(server)
    server.sessions[first.session].last_used -= 120.0  # its client went quiet two minutes ago
    third = _open(server)
    assert first.session not in server.sessions and third.session in server.sessions
