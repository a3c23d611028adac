"""Flower's SuperNode authentication, wired in: the SuperLink admits only SuperNodes whose
public key is on the coordinator's allow-list (TLS required); a SuperNode with any other key
never joins and the run goes on with the registered ones. Every process is stopped by PID."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.config import DataConfig, SplitConfig
from medpriv.processes import wait_until
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.deployment import (
    DeploymentError,
    LocalFederation,
    NodeSpec,
    Tls,
    create_node_key,
    start_superlink,
    start_supernode,
)
from medpriv.train.federated.job import FederatedJob
from tests.tls import self_signed

pytestmark = pytest.mark.slow

SPEC = "synthetic:1200"
SITES = ("CCU", "MICU")


def test_only_registered_supernodes_join(tmp_path: Path):
    cert, key = self_signed(tmp_path / "tls")
    tls = Tls(ca_certificate=cert, certificate=cert, key=key)
    keys = {site: create_node_key(tmp_path / "keys", site) for site in (*SITES, "SICU")}
    nodes = {
        site: NodeSpec(data=SPEC, site=site, split_seed=0, key=keys[site][0]) for site in SITES
    }
    allowed = [keys[site][1] for site in SITES]
    with LocalFederation(tmp_path, nodes, tls=tls, allowed_keys=allowed) as federation:
        assert "--enable-supernode-auth" in federation.superlink.popen.args
        stranger = start_supernode(
            tmp_path,
            "stranger",
            NodeSpec(data=SPEC, site="SICU", split_seed=0, key=keys["SICU"][0]),
            superlink=federation.address,
            tls=tls,
        )
        try:  # an unknown key is refused at activation and the node gives up
            wait_until(lambda: not stranger.alive(), timeout=90, what="the stranger to leave")
            assert "SuperNode ID" not in stranger.log()
            assert "activate" in stranger.log()
        finally:
            stranger.stop()
        job = FederatedJob(
            data=asdict(DataConfig(spec=SPEC)),
            split=asdict(SplitConfig()),
            seed=0,
            recipe=LocalRecipe(hidden=(8,), epochs=1, batch_size=64, lr=0.05).to_config(),
            strategy="fedavg",
            rounds=1,
            fraction=1.0,
            min_clients=2,
            out=str(tmp_path / "out"),
            expected_clients=len(SITES),
            round_timeout=60.0,
        )
        outcome = federation.run(job.write(tmp_path / "job.json"), timeout=300)
        assert outcome.completed, outcome.log[-3000:]
        done = json.loads((tmp_path / "out" / "done.json").read_text())
        assert sorted(done["sites"]) == sorted(SITES)
    assert not federation.superlink.alive()


def test_keys_are_owner_only_never_overwritten_and_auth_needs_tls(tmp_path: Path):
    private, public = create_node_key(tmp_path, "north")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    with pytest.raises(DeploymentError, match="never overwritten"):
        create_node_key(tmp_path, "north")
    with pytest.raises(DeploymentError, match="needs TLS"):
        start_superlink(tmp_path, node_auth=True)
    made = CliRunner().invoke(app, ["fl", "keygen", "--name", "south", "--out", str(tmp_path)])
    assert made.exit_code == 0 and (tmp_path / "south.pub").is_file(), made.output
    plain = CliRunner().invoke(app, ["fl", "superlink", "--allow-key", str(public), "--dry-run"])
    assert plain.exit_code != 0 and "needs TLS" in plain.output
    cert, key = self_signed(tmp_path / "tls")
    secure = CliRunner().invoke(
        app,
        [
            "fl",
            "superlink",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--allow-key",
            str(public),
            "--dry-run",
        ],
    )
    assert secure.exit_code == 0, secure.output
    assert "--enable-supernode-auth" in secure.output
    assert f"flwr supernode register {public.resolve()} local" in secure.output
    node = CliRunner().invoke(
        app,
        [
            "fl",
            "supernode",
            "--data",
            "synthetic",
            "--ca-cert",
            str(cert),
            "--node-key",
            str(private),
            "--dry-run",
        ],
    )
    assert (
        node.exit_code == 0 and f"--auth-supernode-private-key {private.resolve()}" in node.output
    )
