"""`medpriv fl`: the wrappers build the documented Flower commands."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from medpriv.cli import app


def test_supernode_dry_run_prints_the_flower_command():
    result = CliRunner().invoke(
        app,
        [
            "fl",
            "supernode",
            "--data",
            "csv:/data/north.csv",
            "--site",
            "north",
            "--target",
            "outcome",
            "--superlink",
            "10.0.0.5:9092",
            "--port",
            "9101",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert "flower-supernode --insecure --superlink 10.0.0.5:9092" in line
    assert "--port 9101" in line
    assert """'data="csv:/data/north.csv" target="outcome" site="north" """ in line
    # Every node keeps its privacy ledger across runs (default: in its FLWR_HOME).
    ledger = (Path(".flwr") / "supernode-north" / "privacy-ledger.json").resolve()
    assert f'privacy-ledger="{ledger}"' in line and "max-epsilon" not in line


def test_supernode_privacy_policy_goes_into_its_own_node_config(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "fl",
            "supernode",
            "--data",
            "synthetic",
            "--site",
            "MICU",
            "--max-epsilon",
            "4",
            "--min-noise-multiplier",
            "0.8",
            "--max-grad-norm",
            "1.5",
            "--privacy-ledger",
            str(tmp_path / "ledger.json"),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert "max-epsilon=4.0 min-noise-multiplier=0.8 max-grad-norm=1.5" in line
    assert f'privacy-ledger="{tmp_path / "ledger.json"}"' in line
    assert "reproducible-noise" not in line
    bad = CliRunner().invoke(
        app, ["fl", "supernode", "--data", "synthetic", "--max-epsilon", "-1", "--dry-run"]
    )
    assert bad.exit_code == 2 and "max-epsilon must be > 0" in bad.output


def test_superlink_dry_run_disables_dependency_installation():
    result = CliRunner().invoke(app, ["fl", "superlink", "--port", "9200", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--port 9200 --disable-runtime-dependency-installation" in result.output


def test_run_rejects_a_bad_strategy_before_contacting_anyone(tmp_path):
    result = CliRunner().invoke(app, ["fl", "run", "--out", str(tmp_path), "--strategy", "fedsgd"])
    assert (
        result.exit_code == 2 and "federated.strategy (--strategy) must be one of" in result.output
    )


def test_run_refuses_secagg_with_client_level_dp_before_contacting_anyone(tmp_path):
    result = CliRunner().invoke(
        app,
        ["fl", "run", "--out", str(tmp_path), "--method", "fedavg-cdp", "--secagg"],
    )
    assert result.exit_code != 0
    assert "--secagg with fedavg-cdp is not supported" in result.output
    assert not (tmp_path / "job.json").exists()


def test_tls_flags_replace_insecure(tmp_path):
    from tests.tls import self_signed

    cert, key = self_signed(tmp_path)
    link = CliRunner().invoke(
        app,
        ["fl", "superlink", "--tls-cert", str(cert), "--tls-key", str(key), "--dry-run"],
    )
    assert link.exit_code == 0, link.output
    assert "--insecure" not in link.output
    assert f"--ssl-ca-certfile {cert.resolve()}" in link.output  # self-signed: its own CA
    assert f"--ssl-certfile {cert.resolve()} --ssl-keyfile {key.resolve()}" in link.output
    node = CliRunner().invoke(
        app,
        ["fl", "supernode", "--data", "synthetic", "--ca-cert", str(cert), "--dry-run"],
    )
    assert node.exit_code == 0, node.output
    assert f"flower-supernode --root-certificates {cert.resolve()}" in node.output
    half = CliRunner().invoke(app, ["fl", "superlink", "--tls-cert", str(cert), "--dry-run"])
    assert half.exit_code == 2 and "both --tls-cert and --tls-key" in half.output
    missing = CliRunner().invoke(
        app,
        ["fl", "supernode", "--data", "synthetic", "--ca-cert", "/nope.pem", "--dry-run"],
    )
    assert missing.exit_code == 2 and "TLS file not found: /nope.pem" in missing.output
