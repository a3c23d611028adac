"""How tight the white-box canary audit is, and what it costs, on the synthetic ICU cohort.

For each claimed ε: one dp-sgd model with the default recipe on the default splits (attacks
on, so the same training set as `medpriv run`), then its canary audit; printed: ε̂ (the
distribution-free one-run bound), its power, the Gaussian-DP estimate beside it, the verdict,
and the audit's time against the model's training time. With --mutations, the planted faults
of tests/privacy/test_audit_mutations.py (σ = 0, noise × 0.5, clipping skipped, accountant
q/10) are audited over --seeds seeds each, with the correct mechanism beside them, and the
share flagged *contradicted* is printed (targets: faults ≥ 9 of 10, correct ≤ 1 of 10).

Then the black-box (input-canary) audit of the non-private baseline and of dp-sgd at each ε.

Beside each one-run audit's Gaussian-DP estimate, `ideal_gaussian_estimate`: the median reading
of the same statistic on an exact μ-GDP mechanism at the claimed (ε, δ) with the same number of
canaries (`IDEAL_DRAWS` simulated draws) — the most the statistic shows on a mechanism exactly at
its claim, so that a gap between the two is the implementation's and not the statistic's.

Beside each one-run audit, the multi-run audit of the same model's recorded mechanism
(`mechanism_runs_audit`: R independent runs, one canary each; the mutations run it too).

Targets (issue 14): white-box ε̂ ≥ 0.5·ε at ε = 4 and 8; multi-run (R ≥ 1,000) ε̂ ≥ 0.5·ε at
ε = 1 and 2 (by the Gaussian-DP estimate, the distribution-free bound beside it); black-box:
the baseline's worst-case patient ε̂ ≥ 1 and no DP model's ε̂ above its claim; audit time ≤ 2×
training time.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator

import numpy as np

from medpriv.attacks.canary_audit import mechanism_runs_audit, white_box_audit
from medpriv.attacks.input_canaries import black_box_audit
from medpriv.config import load_config
from medpriv.data.sources import load_dataset
from medpriv.experiment import make_splits
from medpriv.privacy.audit.gaussian import gaussian_estimate, gaussian_mu
from medpriv.train.base import get_trainer

IDEAL_DRAWS = 8


def ideal_reading(epsilon: float, delta: float, canaries: int) -> float:
    """The median Gaussian-DP reading of an exact μ-GDP mechanism at (ε, δ) audited with
    `canaries` canaries, each in with probability ½ (scores N(μ, 1) in, N(0, 1) out)."""
    mu = gaussian_mu(epsilon, delta)
    found = []
    for draw in range(IDEAL_DRAWS):
        rng = np.random.default_rng([draw, canaries])
        included = rng.random(canaries) < 0.5
        scores = rng.normal(size=canaries) + mu * included
        found.append(gaussian_estimate(scores, included, delta=delta)["epsilon_estimate"])
    return float(np.median(found))


@contextlib.contextmanager
def planted(fault: str) -> Iterator[None]:
    """One fault planted in the mechanism for the duration (none for `correct`)."""
    import medpriv.privacy.accounting as accounting
    import medpriv.privacy.plan as plan_module
    import medpriv.privacy.step as step_module
    from medpriv.privacy.randomness import NoiseSource

    saved: list[tuple[object, str, object]] = []

    def patch(owner: object, name: str, value: object) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    draw = NoiseSource.gaussian_
    history, calibrate = accounting._history_epsilon, accounting.calibrate_noise
    scaled: dict[str, Callable] = {
        "sigma0": lambda self, out, std: draw(self, out, 0.0),
        "half_noise": lambda self, out, std: draw(self, out, 0.5 * std),
    }
    if fault in scaled:
        patch(NoiseSource, "gaussian_", scaled[fault])
    elif fault == "no_clipping":
        patch(step_module, "_clip_factors", lambda norms, c: norms.new_ones(norms.shape))
    elif fault == "q_over_10":
        patch(
            accounting,
            "_history_epsilon",
            lambda m, h, d: history(m, tuple((s, q / 10, n) for s, q, n in h), d),
        )
        patch(
            plan_module,
            "calibrate_noise",
            lambda **kw: calibrate(**{**kw, "sample_rate": kw["sample_rate"] / 10}),
        )
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def uncached() -> None:
    """Forget every memoised accountant call, so that each timed fit pays for its own
    calibration (as a run's first fit does) and ratios compare like with like."""
    import medpriv.privacy.accounting as accounting
    import medpriv.privacy.plan as plan_module

    accounting._history_epsilon.cache_clear()
    accounting.calibrate_noise.cache_clear()
    plan_module._epsilon.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="1,2,4,8")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--canaries", type=int, default=None, help="default: the tool's rule")
    parser.add_argument("--mutations", action="store_true")
    parser.add_argument("--white-box-only", action="store_true")
    parser.add_argument("--runs-only", action="store_true", help="mutations: many runs only")
    parser.add_argument("--runs", type=int, default=None, help="multi-run R (default: the rule)")
    args = parser.parse_args()
    config = load_config(None, {"run": {"progress": False}})
    dataset = load_dataset(config.data)
    splits = make_splits(dataset, config, seed=0)
    trainer = get_trainer("dp-sgd")
    rows = []
    for epsilon in [float(e) for e in args.epsilons.split(",")]:
        privacy = load_config(None, {"privacy": {"target_epsilon": epsilon}}).privacy
        for seed in range(args.seeds):
            uncached()
            started = time.perf_counter()
            model = trainer.fit(splits=splits, config=config.train, privacy=privacy, seed=seed)
            trained = time.perf_counter() - started
            uncached()
            started = time.perf_counter()
            audit = white_box_audit(
                trainer,
                splits=splits,
                config=config.train,
                privacy=privacy,
                seed=seed,
                canaries=args.canaries,
            )
            audited = time.perf_counter() - started
            started = time.perf_counter()
            runs = mechanism_runs_audit(trainer, model, runs=args.runs)
            ran = time.perf_counter() - started
            row = {
                "epsilon": model.privacy.epsilon,
                "seed": seed,
                "epsilon_hat": round(audit["epsilon_lower_bound"], 3),
                "power": round(audit["max_demonstrable"], 3),
                "gaussian_estimate": round(audit["gaussian_estimate"]["epsilon_estimate"], 3),
                "ideal_gaussian_estimate": round(
                    ideal_reading(
                        float(audit["claimed_epsilon"]),
                        float(model.privacy.delta),
                        int(audit["canaries"]),
                    ),
                    3,
                ),
                "verdict": audit["verdict"],
                "canaries": audit["canaries"],
                "audit_over_training": round(audited / trained, 2),
                "runs": runs["runs"],
                "runs_epsilon_hat": round(runs["epsilon_lower_bound"], 3),
                "runs_power": round(runs["max_demonstrable"], 3),
                "runs_gaussian_estimate": round(runs["gaussian_estimate"]["epsilon_estimate"], 3),
                "runs_verdict": runs["verdict"],
                "runs_over_training": round(ran / trained, 2),
            }
            rows.append(row)
            print(json.dumps(row))
    flagged: dict[str, str] = {}
    if args.mutations:
        privacy = load_config(None, {"privacy": {"target_epsilon": 4.0}}).privacy
        for fault in ("correct", "sigma0", "half_noise", "no_clipping", "q_over_10"):
            verdicts: dict[str, list[str]] = {"one_run": [], "many_runs": []}
            with planted(fault):
                for seed in range(args.seeds):
                    if not args.runs_only:
                        verdicts["one_run"].append(
                            white_box_audit(
                                trainer,
                                splits=splits,
                                config=config.train,
                                privacy=privacy,
                                seed=seed,
                                canaries=args.canaries,
                            )["verdict"]
                        )
                    model = trainer.fit(
                        splits=splits, config=config.train, privacy=privacy, seed=seed
                    )
                    verdicts["many_runs"].append(
                        mechanism_runs_audit(trainer, model, runs=args.runs)["verdict"]
                    )
            for statistic, found in verdicts.items():
                if found:
                    caught = sum(v.startswith("contradicted") for v in found)
                    flagged[f"{fault}:{statistic}"] = f"{caught}/{len(found)}"
                    print(fault, statistic, "contradicted in", f"{caught}/{len(found)}")
    epsilons = [float(e) for e in args.epsilons.split(",")]
    black = [] if args.white_box_only else black_box_rows(args, config, splits, epsilons)
    print(json.dumps({"white_box": rows, "black_box": black, "mutations_at_epsilon_4": flagged}))


def black_box_rows(args: argparse.Namespace, config, splits, epsilons: list[float]) -> list:
    """The black-box (input-canary) audit of the baseline and of dp-sgd at each ε."""
    rows = []
    for method, epsilon in [("baseline", None), *(("dp-sgd", e) for e in epsilons)]:
        trainer = get_trainer(method)
        overrides = {} if epsilon is None else {"privacy": {"target_epsilon": epsilon}}
        privacy = load_config(None, overrides).privacy if trainer.private else None
        for seed in range(args.seeds):
            uncached()
            started = time.perf_counter()
            model = trainer.fit(splits=splits, config=config.train, privacy=privacy, seed=seed)
            trained = time.perf_counter() - started
            uncached()
            started = time.perf_counter()
            audit = black_box_audit(
                trainer, model, splits=splits, config=config.train, privacy=privacy, seed=seed
            )
            row = {
                "method": method,
                "epsilon": model.privacy.epsilon,
                "seed": seed,
                "epsilon_hat": round(audit["epsilon_lower_bound"], 3),
                "power": round(audit["max_demonstrable"], 3),
                "verdict": audit["verdict"],
                "canaries": audit["canaries"],
                "audit_over_training": round((time.perf_counter() - started) / trained, 2),
            }
            rows.append(row)
            print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
