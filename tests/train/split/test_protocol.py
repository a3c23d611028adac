"""The split-learning wire format and the server's refusals: every bad request gets an error
reply, and the server keeps serving its other sessions."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medpriv.errors import ProtocolError
from medpriv.train.split.client import RemotePart
from medpriv.train.split.protocol import Envelope, decode, encode
from medpriv.train.split.server import RefusalLog, SplitServer
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


def _raw(header_text: str, body: bytes = b"") -> bytes:
    raw = header_text.encode()
    return struct.pack("<4sHI", b"MPSL", 1, len(raw)) + raw + body


def _array(shape: list, dtype: str = "float32") -> dict:
    return {"op": "t", "arrays": [{"dtype": dtype, "shape": shape}]}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_raw("[" * 30_000 + "]" * 30_000), "nests deeper"),
        (_raw('{"op": "t", "meta": ' + '{"a": ' * 9 + "1" + "}" * 10), "nests deeper"),
        (_with_header(_array([2**70])), "outside int64"),
        (_with_header(_array([2**62, 2**62])), "shape too large"),
        (_with_header(_array([0, 2**62])), "shape too large"),
        (_with_header(_array([0, 2**31, 2**31, 2**31])), "shape too large"),
        (_with_header(_array([1.5])), "bad shape"),
        (_with_header(_array([True])), "bad shape"),
        (_with_header(_array(["4"])), "bad shape"),
        (_with_header(_array([1] * 9)), "bad shape"),
        (_with_header(_array("4")), "needs a dtype and a shape"),
        (_with_header({"op": "t", "arrays": [[]]}), "needs a dtype and a shape"),
        (_with_header({"op": "t", "arrays": [{}] * 1025}), "at most 1024"),
        (_raw('{"op": "t", "meta": {"lr": NaN}}'), "not a number"),
        (_raw('{"op": "t", "meta": {"lr": -Infinity}}'), "not a number"),
        (_raw('{"op": "t", "meta": {"lr": 1e999}}'), "out of range"),
        (_raw('{"op": "t", "id": 99999999999999999999}'), "outside int64"),
        (_with_header({"op": "t", "id": -1}), "negative"),
        (_with_header({"op": 7}), "'op' must be of type str"),
        (_with_header({"op": ""}), "'op' must be a name"),
        (_with_header({"op": "t" * 33}), "'op' must be a name"),
        (_with_header({"arrays": []}), "'op' must be a name"),
        (_with_header({"op": "t", "id": "1"}), "'id' must be of type int"),
        (_with_header({"op": "t", "seq": True}), "'seq' must be of type int"),
        (_with_header({"op": "t", "session": ["s"]}), "'session' must be of type str"),
        (_with_header({"op": "t", "token": 1}), "'token' must be of type str"),
        (_with_header({"op": "t", "meta": []}), "'meta' must be of type dict"),
        (_with_header({"op": "t", "arrays": {}}), "'arrays' must be of type list"),
        (_raw("[]"), "must be a JSON object"),
        (struct.pack("<4sHI", b"MPSL", 1, 2) + b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_headers_are_protocol_errors(data, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode(data)


@pytest.mark.parametrize(
    "header",
    [
        '"' + '\\"' * 30_000,  # an unterminated string of escaped quotes
        '{"op": "t", "meta": {"s": "' + "[" * 60_000 + '"}}',  # brackets inside a string
        '"' + "a" * 65_000,
    ],
)
def test_the_header_scan_is_linear(header):
    start = time.perf_counter()
    with contextlib.suppress(ProtocolError):
        decode(_raw(header))
    assert time.perf_counter() - start < 0.5


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200))
def test_decode_raises_nothing_but_protocol_errors(noise, at):
    """Random bytes, and a valid message with bytes overwritten, never escape as anything else."""
    valid = encode(Envelope("train", [np.ones((2, 3), np.float32)], {"widths": [3, 2]}, id=1))
    for data in (noise, valid[:at] + noise + valid[at + len(noise) :]):
        with contextlib.suppress(ProtocolError):
            decode(data)


def test_zero_dimensional_arrays_stay_zero_dimensional():
    (back,) = decode(encode(Envelope("t", [np.array(3.0, np.float32)]))).arrays
    assert back.shape == () and back == 3.0


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


def test_fields_from_the_network_are_logged_on_one_line(caplog):
    server = SplitServer()
    forged = "\n2099-01-01 ERROR forged \x1b[2J"
    _reply(server, Envelope("t" + forged, session="s" + forged))
    _reply(server, Envelope("open", [], {"mode": "m" + forged, "widths": [8, 2]}))
    _reply(server, Envelope("open", [], {"optimizer": {"optimizer": "o" + forged}}))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert all("\n" not in m and "\x1b" not in m for m in messages)
    assert sum("\\n2099-01-01" in m for m in messages) >= 2


def test_refusals_are_rate_limited_and_the_rest_counted(caplog):
    log = RefusalLog(per_window=3, window=0.2)
    for i in range(10):
        log.warning("refused %d", i)
    assert [r.getMessage() for r in caplog.records] == [f"refused {i}" for i in range(3)]
    time.sleep(0.25)
    log.warning("refused %d", 10)
    assert caplog.records[-1].getMessage() == "refused 10 (7 earlier refusals not logged)"
