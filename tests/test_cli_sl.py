"""`medpriv sl client` runs the whole pipeline against a split-learning server over gRPC."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.train.split.server import SplitServer
from medpriv.train.split.transport import serve


def test_sl_client_trains_against_a_server_and_writes_results(tmp_path, monkeypatch):
    server = SplitServer(token="t0k")
    grpc_server, port = serve(server, port=0)
    monkeypatch.setenv("MEDPRIV_SL_TOKEN", "t0k")
    try:
        result = CliRunner().invoke(
            app,
            [
                "sl",
                "client",
                "--server",
                f"127.0.0.1:{port}",
                "--data",
                "synthetic:800",
                "--mode",
                "ushaped",
                "--out",
                str(tmp_path),
            ],
        )
    finally:
        grpc_server.stop(grace=None)
    assert result.exit_code == 0, result.output
    (found,) = list(tmp_path.glob("*/results.json"))
    run = json.loads(found.read_text())["runs"][0]
    assert run["method"] == "split-ushaped" and run["params"]["transport"] == "grpc"
    assert {"sl_label_leakage", "sl_reconstruction"} <= set(run["attacks"])
    assert run["cost"]["round_trips"] > 0 and server.sessions == {}  # every session closed
    assert "t0k" not in (found.parent / "config.toml").read_text()


def test_sl_client_refuses_an_unknown_mode():
    result = CliRunner().invoke(app, ["sl", "client", "--server", "x:1", "--mode", "sideways"])
    assert result.exit_code != 0 and "vanilla or ushaped" in result.output
