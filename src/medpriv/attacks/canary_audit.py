"""The white-box canary audit of a DP-SGD model's mechanism (issue: every printed ε must hold).

The audit trains its OWN copy — same data, recipe, privacy settings and mechanism — with m
gradient canaries (`medpriv.privacy.audit.canaries`), each included with probability ½ by
coins only the auditor knows. The released model never sees a canary. The canaries' scores give
the distribution-free one-run lower bound ε̂ (`one_run`) and, beside it, a Gaussian-DP estimate
(`gaussian`). The verdict compares ε̂ with the ε the audit run itself claims:

* contradicted — ε̂ > claimed ε: the mechanism or its accounting is wrong (95% confidence);
* contradicted by the Gaussian estimate — only the estimate that assumes Gaussian noise exceeds
  the claim: flagged as loudly, labelled as resting on that assumption;
* tight — ε̂ ≥ half the claim;
* not contradicted — and this audit could show at most `max_demonstrable`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from medpriv.privacy.audit.canaries import DiracCanaries
from medpriv.privacy.audit.gaussian import gaussian_estimate
from medpriv.privacy.audit.multi_run import Mechanism, MultiRunBound, audit_runs, run_canaries
from medpriv.privacy.audit.one_run import OneRunBound, audit_one_run

if TYPE_CHECKING:
    import torch

# A Dirac canary adds no record: it owns one coordinate of the gradient, so many can be planted
# without changing what the patients' records teach the model, and more canaries only raise the
# audit's power (the one-run bound and the Gaussian estimate's confidence interval tighten with
# m). `benchmarks/audit_tightness.py --white-box-only` at ε = 4 (two seeds): 1,000 canaries gave
# ε̂ 1.10–1.58 and a Gaussian estimate 1.56–2.19; 8,000 gave 1.78–1.87 and 2.21–2.34, the audit
# still under the training's time. Each canary is a privacy unit, Poisson-sampled like a
# patient: the claimed ε is per unit, so their number does not change it.
MAX_CANARIES = 10_000
PARAMETER_SHARE = 0.5  # at most half the coordinates carry a canary
CONFIDENCE = 0.95
GAUSSIAN_CONTRADICTION = "contradicted by the Gaussian estimate"
THREAT_MODEL = (
    "white-box: the adversary sees every noisy update and knows every other record "
    "(DP-SGD's own threat model; for fedavg-dp, every local step of one client; for fedavg-cdp, "
    "every noisy aggregate, with canary clients); canaries are Dirac gradient canaries (or "
    "client updates) of norm 10·C"
)


def canary_count(parameters: int, requested: int | None = None) -> int:
    """m from public quantities: `requested` (default `MAX_CANARIES`), at most half of the
    model's parameters (each canary owns a coordinate), at least 2."""
    return max(2, min(requested or MAX_CANARIES, int(PARAMETER_SHARE * parameters)))


RUNS_THREAT_MODEL = (
    "white-box, many runs: R independent runs of the mechanism this model recorded (σ, q, "
    "steps, C) through the same noise and clipping code, each on the worst-case neighbouring "
    "pair — no record against one Dirac canary of norm 10·C, in with probability ½ — the "
    "adversary seeing every noisy update (for fedavg-dp, the client whose patients have the "
    "largest ε; for fedavg-cdp, the server's noisy aggregates, with canary clients)"
)


DEPLOYMENT_RUNS_THREAT_MODEL = (
    "white-box, many runs, at the coordinator of a deployment: R independent runs of the "
    "mechanism the statement records (σ, q, steps, C — for fedavg-dp as the sites reported "
    "them) through medpriv's own noise and clipping code, each on the worst-case neighbouring "
    "pair (one Dirac canary of norm 10·C, in with probability ½), every noisy update seen; it "
    "tests the recorded parameters against the claimed ε, not the sites' own processes"
)


def verdict(lower_bound: float, claimed: float | None, estimate: float | None = None) -> str:
    """`contradicted` (the distribution-free bound exceeds the claim), `contradicted by the
    Gaussian estimate` (only the estimate that assumes Gaussian noise does), `tight` (the bound
    is at least half the claim) or `not contradicted`; `no claim` without an ε."""
    if claimed is None:
        return "no claim"
    if lower_bound > claimed + 1e-9:
        return "contradicted"
    if estimate is not None and estimate > claimed + 1e-9:
        return GAUSSIAN_CONTRADICTION
    return "tight" if lower_bound >= claimed / 2 else "not contradicted"


def verdict_text(audit: dict[str, Any]) -> str:
    """The verdict in words that never over-claim."""
    found, power = audit.get("epsilon_lower_bound"), audit.get("max_demonstrable")
    claim = audit.get("claimed_epsilon")
    kind = audit.get("verdict")
    if kind == "contradicted":
        return f"contradicted: ε̂ {found:.2f} > claimed ε {claim:.3g}"
    if kind == GAUSSIAN_CONTRADICTION:
        estimate = audit.get("gaussian_estimate", {}).get("epsilon_estimate", float("nan"))
        return (
            f"contradicted by the Gaussian-DP estimate {estimate:.2f} > claimed ε {claim:.3g} "
            f"(an estimate that assumes Gaussian noise; the distribution-free ε̂ is {found:.2f})"
        )
    if kind == "tight":
        return f"tight: ε̂ {found:.2f} ≥ half the claimed ε {claim:.3g}"
    return f"not contradicted — this audit could show at most ε̂ {power:.2f}"


VERDICT_ORDER = ("contradicted", GAUSSIAN_CONTRADICTION, "tight", "not contradicted", "no claim")
SUMMARY_KEYS = (
    "epsilon_lower_bound",
    "max_demonstrable",
    "power",
    "confidence",
    "claimed_epsilon",
    "verdict",
    "consistent",
    "threat_model",
)


def audit_block(
    *,
    white_box: dict[str, Any] | None,
    black_box: dict[str, Any] | None,
    white_box_runs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """results.json `attacks.audit`: one block per threat model, and at the top the deciding
    one's summary — the worst verdict, then the larger ε̂ — named in `deciding`."""
    blocks = {
        name: block
        for name, block in (
            ("white_box", white_box),
            ("white_box_runs", white_box_runs),
            ("black_box", black_box),
        )
        if block is not None
    }
    if not blocks:
        raise ValueError("an audit block needs at least one threat model")
    deciding = min(
        blocks,
        key=lambda name: (
            VERDICT_ORDER.index(blocks[name]["verdict"]),
            -blocks[name]["epsilon_lower_bound"],
        ),
    )
    summary = {key: blocks[deciding].get(key) for key in SUMMARY_KEYS}
    return {**summary, "deciding": deciding, **blocks}


def white_box_audit(
    trainer: Any,
    *,
    splits: Any,
    config: Any,
    privacy: Any,
    seed: int,
    canaries: int | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any] | None:
    """The audit block for a trainer that takes gradient canaries; None for any other."""
    if not getattr(trainer, "gradient_canaries", False):
        return None
    m = canaries or MAX_CANARIES
    audited = trainer.fit(
        splits=splits,
        config=config,
        privacy=privacy,
        seed=seed,
        canaries=partial(_planted, m),
    )
    planted: DiracCanaries = audited.artifacts["canaries"]
    delta = float(audited.privacy.delta or 0.0)
    scores = planted.scores
    # Guessing both ways only: a likelihood-ratio score is as telling at the bottom as at the
    # top, so "in only" guesses would only cost Bonferroni power.
    bound = audit_one_run(
        scores, planted.included, delta=delta, confidence=confidence, in_only_shares=()
    )
    # the audited mechanism's own claim: for fedavg-dp, the canary client's ε
    claimed = audited.artifacts.get("canary_epsilon", audited.privacy.epsilon)
    estimate = gaussian_estimate(scores, planted.included, delta=delta, confidence=confidence)
    return threat_model_block(
        bound,
        claimed=claimed,
        threat_model=THREAT_MODEL,
        included=planted.included,
        estimate=estimate,
        steps=planted.steps,
        gaussian_estimate=estimate,
    )


def mechanism_runs_audit(
    trainer: Any,
    model: Any,
    *,
    runs: int | None = None,
    confidence: float = CONFIDENCE,
    device: torch.device | str = "cpu",
) -> dict[str, Any] | None:
    """The multi-run audit of the mechanism a model recorded (`medpriv.privacy.audit.multi_run`):
    DP-SGD's step, a fedavg-dp client's (the worst-off patients' site) or DP-FedAvg's aggregate;
    None where it does not apply (no such mechanism, the Opacus engine, no claim, patients
    spread over several sites)."""
    # Opacus draws its noise inside its own optimizer: runs of medpriv's step would not test it
    if not getattr(trainer, "mechanism_runs", False) or model.params.get("engine") == "opacus":
        return None
    return recorded_mechanism_audit(model.privacy, runs=runs, confidence=confidence, device=device)


def recorded_mechanism_audit(
    spent: Any,
    *,
    runs: int | None = None,
    confidence: float = CONFIDENCE,
    device: torch.device | str = "cpu",
    threat_model: str = RUNS_THREAT_MODEL,
) -> dict[str, Any] | None:
    """The multi-run audit of the mechanism a privacy statement records (σ, q, steps, C, δ and
    the claimed ε); None when it records no complete one."""
    fields = (
        spent.epsilon,
        spent.delta,
        spent.noise_multiplier,
        spent.sample_rate,
        spent.steps,
        spent.clipping_norm,
    )
    if any(value is None for value in fields) or not spent.noise_multiplier or not spent.steps:
        return None
    mechanism = Mechanism(
        noise_multiplier=float(spent.noise_multiplier),
        sample_rate=float(spent.sample_rate),
        steps=int(spent.steps),
        max_grad_norm=float(spent.clipping_norm),
        # per unit: with groups, δ and ε are the unit's, no smaller than one record's
        delta=float(spent.delta),
        claimed_epsilon=float(spent.epsilon),
    )
    planted = run_canaries(mechanism, runs=runs, device=device)
    bound, estimate = audit_runs(
        planted.observations, planted.included, mechanism=mechanism, confidence=confidence
    )
    return threat_model_block(
        bound,
        claimed=mechanism.claimed_epsilon,
        threat_model=threat_model,
        included=planted.included,
        estimate=estimate,
        steps=mechanism.steps,
        gaussian_estimate=estimate,
        device=str(device),
    )


def threat_model_block(
    bound: OneRunBound | MultiRunBound,
    *,
    claimed: float | None,
    threat_model: str,
    included: np.ndarray,
    estimate: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One threat model's results.json block: the bound, its power, the claim and the verdict
    (the Gaussian `estimate`, when given, may flag a contradiction said as such)."""
    found = verdict(
        bound.epsilon_lower_bound,
        claimed,
        None if estimate is None else float(estimate["epsilon_estimate"]),
    )
    return {
        **bound.to_dict(),
        "claimed_epsilon": claimed,
        "verdict": found,
        "consistent": None if claimed is None else not found.startswith("contradicted"),
        "power": bound.max_demonstrable,
        "threat_model": threat_model,
        "canaries_included": int(np.sum(included)),
        **extra,
    }


def _planted(m: int, *, parameters: int, **mechanism: Any) -> DiracCanaries:
    return DiracCanaries(canaries=canary_count(parameters, m), parameters=parameters, **mechanism)
