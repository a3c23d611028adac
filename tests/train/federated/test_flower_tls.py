"""The Flower deployment over TLS: SuperLink with a certificate, SuperNodes and `flwr` trusting
its CA, a round completes; a SuperNode speaking plain text is never admitted. Every process is
stopped by PID."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import pytest

from medpriv.config import DataConfig, SplitConfig
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.deployment import (
    LocalFederation,
    NodeSpec,
    Tls,
    cli_config,
    start_supernode,
)
from medpriv.train.federated.job import FederatedJob
from tests.tls import self_signed

pytestmark = pytest.mark.slow

SPEC = "synthetic:1200"
SITES = ("CCU", "MICU")


def test_tls_federation_completes_and_turns_away_a_plain_supernode(tmp_path: Path):
    cert, key = self_signed(tmp_path / "tls")
    tls = Tls(ca_certificate=cert, certificate=cert, key=key)
    nodes = {site: NodeSpec(data=SPEC, site=site, split_seed=0) for site in SITES}
    with LocalFederation(tmp_path, nodes, tls=tls) as federation:
        assert "--insecure" not in " ".join(federation.superlink.popen.args)
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
        assert (tmp_path / "out" / "final.npz").is_file()

        plain = start_supernode(
            tmp_path, "plain", NodeSpec(data=SPEC, site="SICU"), superlink=federation.address
        )
        try:
            time.sleep(8)
            assert "SuperNode ID" not in plain.log()  # never registered over plain text
        finally:
            plain.stop()
    assert not federation.superlink.alive()


def test_tls_settings_refuse_missing_files_and_write_the_cli_config(tmp_path: Path):
    from medpriv.train.federated.deployment import DeploymentError

    with pytest.raises(DeploymentError, match="TLS file not found"):
        Tls(ca_certificate=tmp_path / "nope.pem")
    cert, _ = self_signed(tmp_path)
    assert "insecure = true" in cli_config("127.0.0.1:9092")
    secure = cli_config("127.0.0.1:9092", Tls(ca_certificate=cert))
    assert f'root-certificates = "{cert.resolve()}"' in secure and "insecure" not in secure
    with pytest.raises(DeploymentError, match="certificate and key"):
        Tls(ca_certificate=cert).superlink_args()
