"""Faults planted in the one DP mechanism for the audit mutation tests: in the noise draw
(σ = 0, noise × 0.5), in the step's clipping function (none) and in the accountant (q / 10)."""

from __future__ import annotations

import pytest

import medpriv.privacy.accounting as accounting
import medpriv.privacy.plan as plan_module
import medpriv.privacy.step as step_module
from medpriv.privacy.randomness import NoiseSource


def half_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    draw = NoiseSource.gaussian_
    monkeypatch.setattr(NoiseSource, "gaussian_", lambda self, out, std: draw(self, out, std / 2))


def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    draw = NoiseSource.gaussian_
    monkeypatch.setattr(NoiseSource, "gaussian_", lambda self, out, std: draw(self, out, 0.0))


def no_clipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_module, "_clip_factors", lambda norms, c: norms.new_ones(norms.shape))


def accountant_q_over_10(monkeypatch: pytest.MonkeyPatch) -> None:
    history_epsilon, calibrate = accounting._history_epsilon, accounting.calibrate_noise

    def smaller_q(mechanism, history, delta):
        return history_epsilon(mechanism, tuple((s, q / 10, n) for s, q, n in history), delta)

    def calibrate_small_q(**settings):
        return calibrate(**{**settings, "sample_rate": settings["sample_rate"] / 10})

    monkeypatch.setattr(accounting, "_history_epsilon", smaller_q)
    monkeypatch.setattr(plan_module, "calibrate_noise", calibrate_small_q)
