"""`--device auto|cpu|cuda`: the CPU always works; cuda without a GPU is a clear error."""

from __future__ import annotations

import pytest
import torch

from medpriv.config import ExperimentConfig, RunConfig
from medpriv.device import resolve_device
from medpriv.errors import ConfigError
from medpriv.privacy.audit.multi_run import Mechanism, run_canaries
from tests.test_cli_errors import invoke


def test_auto_takes_a_gpu_only_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") == resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        resolve_device("gpu")


def test_an_unknown_device_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.device \(--device\)"):
        ExperimentConfig(run=RunConfig(device="tpu")).validate()
    result = invoke("run", "--device", "tpu", "--out", str(tmp_path), "--attacks", "none")
    assert result.exit_code != 0 and "--device" in result.output


def test_the_many_runs_audit_draws_its_runs_on_the_resolved_device():
    mechanism = Mechanism(
        noise_multiplier=1.0,
        sample_rate=0.5,
        steps=3,
        max_grad_norm=1.0,
        delta=1e-5,
        claimed_epsilon=2.0,
    )
    planted = run_canaries(mechanism, runs=200, device=resolve_device("auto"))
    assert planted.observations.shape == (3, 200)
