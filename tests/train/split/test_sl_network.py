"""Split learning over gRPC on 127.0.0.1: `medpriv sl server` as a separate process reproduces
the in-process run (max abs diff ≤ 1e-5), refuses unauthenticated and malformed requests while
serving, and is stopped by PID. TLS is checked on an in-test server."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medpriv.config import SplitLearningConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import ProtocolError
from medpriv.train.base import get_trainer
from medpriv.train.split.protocol import Envelope, decode, encode
from medpriv.train.split.server import SplitServer
from medpriv.train.split.trainer import TOKEN_ENV
from medpriv.train.split.transport import GrpcTransport, serve
from tests.conftest import make_toy_dataset
from tests.tls import self_signed
from tests.train.split.sl_process import start_sl_server

CONFIG = TrainConfig(epochs=2, hidden=(16, 8), batch_size=64)


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(500), seed=0)


def test_a_server_process_reproduces_the_in_process_run_and_is_stopped_by_pid(
    splits, tmp_path, monkeypatch
):
    server, port = start_sl_server(tmp_path, ["tok-123"])
    try:
        assert server.alive()
        monkeypatch.setenv(TOKEN_ENV, "tok-123")
        for method in ("split", "split-ushaped", "splitfed"):
            remote = get_trainer(
                method, split_learning=SplitLearningConfig(server=f"127.0.0.1:{port}")
            ).fit(splits=splits, config=CONFIG, seed=0)
            local = get_trainer(method, split_learning=SplitLearningConfig()).fit(
                splits=splits, config=CONFIG, seed=0
            )
            diff = np.abs(remote.margin(splits.test) - local.margin(splits.test)).max()
            assert diff <= 1e-5 and remote.params["transport"] == "grpc"

        channel = GrpcTransport(f"127.0.0.1:{port}")
        reply = decode(channel.call(encode(Envelope("open", [], {"mode": "vanilla"}))))
        assert reply.op == "error" and "unauthenticated" in reply.meta["error"]
        reply = decode(channel.call(b"\x00" * 64))  # no token: turned away before it is read
        assert reply.op == "error" and "unauthenticated" in reply.meta["error"]
        reply = decode(channel.call(b"\x00" * 64, token="tok-123"))
        assert reply.op == "error" and "malformed" in reply.meta["error"]
        channel.close()

        monkeypatch.setenv(TOKEN_ENV, "wrong")
        with pytest.raises(ProtocolError, match="unauthenticated"):
            get_trainer(
                "split", split_learning=SplitLearningConfig(server=f"127.0.0.1:{port}")
            ).fit(splits=splits, config=CONFIG, seed=0)
        assert server.alive()
        log = server.log()
        assert "refused" in log and "session" in log
    finally:
        pid = server.pid
        server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_tls_transport_trains_and_a_plain_client_is_turned_away(splits, tmp_path):
    cert, key = self_signed(tmp_path)
    grpc_server, port = serve(SplitServer(), port=0, tls=(cert, key))
    try:
        settings = SplitLearningConfig(server=f"127.0.0.1:{port}", ca_certificate=str(cert))
        model = get_trainer("split-ushaped", split_learning=settings).fit(
            splits=splits, config=CONFIG, seed=0
        )
        assert model.params["traffic"]["round_trips"] > 0
        plain = GrpcTransport(f"127.0.0.1:{port}", timeout=5)
        with pytest.raises(ProtocolError, match="split server"):
            plain.call(encode(Envelope("open")))
        plain.close()
    finally:
        grpc_server.stop(grace=None)
