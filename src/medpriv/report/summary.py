"""What a reader decides on, computed once from a results document for the HTML and Markdown
reports and the console: the headline table (one row per method and ε; utility mean ± SD over
seeds, ε the LARGEST over seeds — the guarantee a reader may rely on is the weakest one),
plain-language privacy statements with every caveat of every seed, and warnings. Standard
library only; aggregates only.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medpriv.report.plots import number

SEED_SUFFIX = re.compile(r"\s+seed=\d+$")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _path(run: dict, *keys: str) -> float | None:
    value: Any = run
    for key in keys:
        value = _dict(value).get(key)
    return number(value)


@dataclass(frozen=True)
class Stat:
    """A column over a group's seeds: mean, SD (None for one value), count and largest value."""

    mean: float | None
    sd: float | None = None
    n: int = 0
    max: float | None = None

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        present = [v for v in values if v is not None and math.isfinite(v)]
        if not present:
            return cls(None)
        sd = statistics.stdev(present) if len(present) > 1 else None
        return cls(statistics.fmean(present), sd, len(present), max(present))


@dataclass(frozen=True)
class Column:
    """A headline column: key, title, how to read a run, which way is better, format."""

    key: str
    title: str
    read: Callable[[dict], float | None]
    better: str | None  # "max", "min" or None (not ranked)
    spec: str = ".3f"


HEADLINE_COLUMNS = (
    Column("epsilon", "ε", lambda r: _path(r, "privacy", "epsilon"), None, ".3g"),
    Column("auroc", "AUROC", lambda r: _path(r, "utility", "auroc"), "max"),
    Column("gap", "AUROC gap to non-private", lambda r: None, "min"),
    Column("auprc", "AUPRC", lambda r: _path(r, "utility", "auprc"), "max"),
    Column("accuracy", "Accuracy", lambda r: _path(r, "utility", "accuracy"), "max"),
    Column("mia_auc", "MIA AUC", lambda r: _path(r, "attacks", "mia_loss", "auc"), "min"),
    Column(
        "lira_tpr",
        "LiRA TPR @ 0.1% FPR",
        lambda r: _path(r, "attacks", "mia_lira", "tpr_at_fpr", "0.001"),
        "min",
    ),
    Column(
        "audit_white",
        "Audit ε̂ (white-box)",
        lambda r: _path(r, "attacks", "audit", "white_box", "epsilon_lower_bound"),
        "min",
        ".2f",
    ),
    Column(
        "audit_runs",
        "Audit ε̂ (white-box, many runs)",
        lambda r: _path(r, "attacks", "audit", "white_box_runs", "epsilon_lower_bound"),
        "min",
        ".2f",
    ),
    Column(
        "audit_black",
        "Worst-case patient ε̂ (black-box)",
        lambda r: _path(r, "attacks", "audit", "black_box", "epsilon_lower_bound"),
        "min",
        ".2f",
    ),
    Column("train_seconds", "Train s", lambda r: _path(r, "cost", "train_seconds"), "min", ".1f"),
    Column("bytes", "Communicated", lambda r: _path(r, "cost", "bytes_communicated") or None, None),
)


@dataclass(frozen=True)
class Row:
    """One method at one ε: its runs (one per seed) and each headline column over them."""

    label: str
    method: str
    runs: tuple[dict, ...]
    stats: dict[str, Stat]

    @property
    def epsilon(self) -> float | None:
        """The headline ε: the largest over the seeds (None when no run is private)."""
        return self.stats["epsilon"].max

    @property
    def private(self) -> bool:
        return self.epsilon is not None

    @property
    def statement_run(self) -> dict:
        """The run whose guarantee is the weakest (largest ε): its statement is the row's."""
        private = [r for r in self.runs if _path(r, "privacy", "epsilon") is not None]
        if not private:
            return self.runs[0]
        return max(private, key=lambda r: _path(r, "privacy", "epsilon"))

    @property
    def no_guarantee(self) -> bool:
        """Some seed was trained with replayable noise: the row carries no guarantee."""
        return any(reproducible_noise(r) for r in self.runs)

    @property
    def auroc_ci(self) -> tuple[float, float] | None:
        """The bootstrap 95% CI of a single run's AUROC (with several seeds, the SD is shown)."""
        if len(self.runs) != 1:
            return None
        ci = _dict(self.runs[0].get("utility")).get("auroc_ci95")
        if isinstance(ci, list | tuple) and len(ci) == 2:
            lo, hi = number(ci[0]), number(ci[1])
            if lo is not None and hi is not None:
                return lo, hi
        return None

    @property
    def no_better_than_chance(self) -> bool:
        """The test AUROC's 95% interval reaches 0.5: one seed's bootstrap CI, or over several
        seeds the normal interval of their mean."""
        stat = self.stats["auroc"]
        if stat.mean is None:
            return False
        if (ci := self.auroc_ci) is not None:
            return ci[0] <= 0.5
        if stat.sd is not None and stat.n > 1:
            return stat.mean - 1.96 * stat.sd / math.sqrt(stat.n) <= 0.5
        return False


# A private method's non-private counterpart (the same model and protocol without DP); a
# private run of a method not listed is compared with that method's non-private runs.
COUNTERPARTS = {
    "dp-sgd": "baseline",
    "dp-logreg": "logreg",
    "fedavg-dp": "fedavg",
    "fedavg-cdp": "fedavg",
}


def counterpart_by_seed(
    row: Row, rows: list[Row], read: Callable[[dict], float | None]
) -> dict[Any, float]:
    """Seed -> `read` of the non-private counterpart's run with that seed (empty for a row
    that is not private or has no counterpart)."""
    if not row.private:
        return {}
    method = COUNTERPARTS.get(row.method, row.method)
    reference: dict[Any, float] = {}
    for other in rows:
        if other.method == method and not other.private:
            for run in other.runs:
                if (value := read(run)) is not None:
                    reference.setdefault(run.get("seed"), value)
    return reference


def _auroc_gaps(row: Row, rows: list[Row]) -> Stat:
    """The counterpart's AUROC minus this row's, seed by seed (seeds both have)."""

    def read(run: dict) -> float | None:
        return _path(run, "utility", "auroc")

    reference = counterpart_by_seed(row, rows, read)
    gaps = [
        reference[run.get("seed")] - value
        for run in row.runs
        if run.get("seed") in reference and (value := read(run)) is not None
    ]
    return Stat.of(gaps)


def group_label(run: dict, index: int) -> str:
    """A run's name without its seed: the runs of one method at one ε share it."""
    name = str(run.get("name") or run.get("method") or f"run {index + 1}")
    return SEED_SUFFIX.sub("", name)


def headline(runs: list[dict]) -> list[Row]:
    """One row per method and ε, in the order the runs were planned."""
    groups: dict[str, list[dict]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(group_label(run, i), []).append(run)
    rows = [
        Row(
            label=label,
            method=str(members[0].get("method") or label),
            runs=tuple(members),
            stats={c.key: Stat.of([c.read(r) for r in members]) for c in HEADLINE_COLUMNS},
        )
        for label, members in groups.items()
    ]
    for row in rows:
        row.stats["gap"] = _auroc_gaps(row, rows)
    return rows


def best_rows(rows: list[Row]) -> dict[str, set[int]]:
    """Column key -> indices of the rows holding its best mean (ties all marked)."""
    best: dict[str, set[int]] = {}
    for column in HEADLINE_COLUMNS:
        if column.better is None:
            continue
        values = {i: row.stats[column.key].mean for i, row in enumerate(rows)}
        present = {i: v for i, v in values.items() if v is not None}
        if len(present) < 2 or len(set(present.values())) == 1:
            continue  # nothing to choose between
        target = max(present.values()) if column.better == "max" else min(present.values())
        best[column.key] = {i for i, v in present.items() if math.isclose(v, target)}
    return best


def visible_columns(rows: list[Row]) -> list[Column]:
    """The headline columns some row has a value for (ε and AUROC always)."""
    return [
        c
        for c in HEADLINE_COLUMNS
        if c.key in ("epsilon", "auroc") or any(r.stats[c.key].mean is not None for r in rows)
    ]


def cell_text(
    row: Row, column: Column, *, none: str = "none", ci_sep: str = " ", pm: str = " ± "
) -> str:
    """A headline cell as text: ε `none` for no guarantee, else the largest ε over the seeds
    (marked when replayable noise voids it), AUROC with its CI for one seed, mean ± SD over
    seeds otherwise."""
    stat = row.stats[column.key]
    if column.key == "epsilon":
        if row.epsilon is None:
            return none
        text = format(row.epsilon, column.spec)
        return f"{text} (NO GUARANTEE)" if row.no_guarantee else text
    if column.key == "auroc" and stat.mean is not None:
        ci = row.auroc_ci
        text = (
            format_stat(stat, column.spec, pm=pm)
            if ci is None
            else (f"{stat.mean:.3f}{ci_sep}({ci[0]:.3f}–{ci[1]:.3f})")
        )
        return f"{text}{ci_sep}{CHANCE}" if row.no_better_than_chance else text
    if column.key == "bytes":
        return format_bytes(stat.mean)
    if column.key in AUDIT_POWER_OF and stat.mean is not None:
        power = audit_power(row, AUDIT_POWER_OF[column.key])
        text = format_stat(stat, column.spec, pm=pm)
        return text if power is None else f"{text}{ci_sep}(can show ≤ {power:.2f})"
    return format_stat(stat, column.spec, pm=pm)


CHANCE = "no better than chance"
AUDIT_POWER_OF = {
    "audit_white": "white_box",
    "audit_runs": "white_box_runs",
    "audit_black": "black_box",
}


def audit_power(row: Row, threat_model: str) -> float | None:
    """The largest ε̂ the row's audits of this threat model could have shown (over seeds)."""
    found = [_path(r, "attacks", "audit", threat_model, "max_demonstrable") for r in row.runs]
    found = [p for p in found if p is not None]
    return max(found) if found else None


def format_stat(stat: Stat, spec: str = ".3f", *, pm: str = " ± ") -> str:
    """'0.812', '0.812 ± 0.010', or an em dash."""
    if stat.mean is None:
        return "—"
    text = format(stat.mean, spec)
    return text if stat.sd is None else f"{text}{pm}{format(stat.sd, spec)}"


def format_bytes(value: float | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return "—"


# ---------------------------------------------------------------- privacy statements


REPRODUCIBLE_NOISE = "reproducible"
NO_GUARANTEE = (
    "trained with reproducible noise (--reproducible-noise): anyone who knows the run seed can "
    "regenerate its noise, so it carries NO differential-privacy guarantee whatever ε it shows "
    "(for debugging and tests only)"
)
CARD_UNPROTECTED = (
    "The exact counts on this card are computed from every record without noise: no model's ε "
    "covers them."
)
MEASURED_ON = (
    "Every figure is measured on the model that would be released, trained on every training "
    "patient: utility on the untouched test patients; membership attacks and the black-box "
    "audit take the training patients as members and the test patients as non-members; the "
    "white-box audits use their own runs. AUROC gap: the non-private counterpart's AUROC minus "
    "the private model's, seed by seed (dp-sgd → baseline, dp-logreg → logreg, fedavg-dp and "
    "fedavg-cdp → fedavg); “no better than chance”: the AUROC's 95% interval reaches 0.5"
)
FLOWER_MEASURED_ON = (
    "A real Flower federation: the best global model, scored by each site on its own held-out "
    "patients, each site returning only a histogram of the log-odds by label (no per-patient "
    "score left a site); utility is read from their sum, its AUROC within ±{error} of the exact "
    "one (binning), AUPRC, Brier score and curves binned too; each site's own figures are in "
    "results.json (utility.federated.sites); no attack was run on this deployment"
)


def attack_sample_note(document: dict) -> str:
    """'; on this table the attacks scored a random sample …' when a membership attack of the
    document scored a sample of units (`run.attack_units`); '' otherwise."""
    samples = [
        block["sample"]
        for run in document.get("runs") or []
        for block in (run.get("attacks") or {}).values()
        if isinstance(block, dict) and isinstance(block.get("sample"), dict)
    ]
    if not samples:
        return ""
    first = samples[0]
    return (
        f"; on this table the membership and attribute attacks scored a uniform random sample "
        f"of {first['member_units']:,} of {first['member_units_total']:,} training patients "
        f"and {first['nonmember_units']:,} of {first['nonmember_units_total']:,} test patients "
        "(per seed; the reference models trained on all of them)"
    )


def measured_on(document: dict) -> str:
    """What the figures are measured on: the release-model protocol of `medpriv run`, or a
    Flower deployment's federated evaluation (with its binning error)."""
    if document.get("engine") != "flower":
        return MEASURED_ON + attack_sample_note(document)
    errors = [
        (((run.get("utility") or {}).get("federated") or {}).get("combined") or {}).get(
            "auroc_binning_error"
        )
        for run in document.get("runs") or []
    ]
    found = [e for e in errors if isinstance(e, int | float)]
    return FLOWER_MEASURED_ON.format(error=f"{max(found):.4f}" if found else "?")


AUDIT_POWER = (
    "an audit that does not contradict a claim does not confirm it: it can show no more than "
    "its power"
)
# What a statement says beyond ε, in the order a reader needs it (results.json privacy keys).
DETAIL_KEYS = (
    ("caveats", "Caveat"),
    ("public", "Treated as public"),
    ("trusts", "Trusts"),
    ("unprotected", "Not protected"),
)


def reproducible_noise(run: dict) -> bool:
    """Whether the run's noise can be replayed from its seed (no guarantee)."""
    return _dict(run.get("privacy")).get("noise") == REPRODUCIBLE_NOISE


def no_guarantee_notes(rows: list[Row]) -> list[str]:
    """One line per method and ε trained with replayable noise."""
    return [f"{row.label}: {NO_GUARANTEE}." for row in rows if row.no_guarantee]


def statement_details(row: Row) -> list[tuple[str, list[str]]]:
    """(title, sentences) for caveats, what is treated as public, whom the guarantee trusts,
    what it does not protect and the recipe the rule chose: the union over every seed of the
    row, in first-seen order."""
    out = []
    for key, title in DETAIL_KEYS:
        seen: dict[str, None] = {}
        for run in row.runs:
            items = _dict(run.get("privacy")).get(key) or []
            if isinstance(items, str):
                items = [items]
            for item in items:
                if item not in (None, ""):
                    seen[str(item).strip().rstrip(".")] = None
        if seen:
            out.append((title, list(seen)))
    recipes = {
        str(reason): None
        for run in row.runs
        if (reason := _dict(_dict(run.get("params")).get("recipe")).get("reason"))
    }
    if recipes:
        out.append(("Recipe (from public quantities)", list(recipes)))
    return out


def audit_verdict(run: dict) -> str | None:
    """The audit in words that never over-claim: CONTRADICTS when ε̂ (or the Gaussian-DP
    estimate, said as such) exceeds the claim, else 'tight' or 'not contradicted' with the
    largest ε̂ this audit could have shown; for a model without a claim, its exposure."""
    audit = _dict(_dict(run.get("attacks")).get("audit"))
    bound = number(audit.get("epsilon_lower_bound"))
    if bound is None:
        return None
    conf = number(audit.get("confidence"))
    at = f" at {conf:.0%} confidence" if conf is not None else ""
    what = AUDIT_KINDS.get(str(audit.get("deciding")), "An empirical audit")
    power = number(audit.get("power"))
    power_text = f"; this audit could show at most {power:.2f}" if power is not None else ""
    verdict = audit.get("verdict")
    if verdict == "no claim":
        return (
            f"{what} shows the most exposed patient at ε̂ ≥ {bound:.2f}{at}{power_text} "
            "(no ε is claimed)."
        )
    if audit.get("consistent") is False:
        estimate = number(
            _dict(_dict(audit.get(str(audit.get("deciding")))).get("gaussian_estimate")).get(
                "epsilon_estimate"
            )
        )
        if verdict != "contradicted" and estimate is not None:
            return (
                f"{what} estimates ε at {estimate:.2f} assuming Gaussian noise (its "
                f"distribution-free bound is {bound:.2f}{at}): this CONTRADICTS the claim — "
                "do not rely on this model's ε."
            )
        return (
            f"{what} bounds ε below by {bound:.2f}{at}: this CONTRADICTS the claim — "
            "do not rely on this model's ε."
        )
    if verdict == "tight":
        return f"{what} bounds ε below by {bound:.2f}{at}: the claim is tight (ε̂ ≥ half of ε)."
    return (
        f"{what} bounds ε below by {bound:.2f}{at}: the claim is not contradicted"
        f"{power_text} ({AUDIT_POWER})."
    )


AUDIT_KINDS = {
    "white_box": "A white-box canary audit",
    "white_box_runs": "A white-box audit over many runs of the mechanism",
    "black_box": "A black-box canary audit",
}


def user_model(run: dict) -> str:
    """Which estimator the user's `model` run is, and whether its own fitted weights were
    attacked ("" for medpriv's methods)."""
    params = _dict(run.get("params"))
    if run.get("method") != "model" or not params.get("estimator"):
        return ""
    source = f" from `{params['model']}`" if params.get("model") else ""
    text = f"The hospital's model ({params['estimator']}{source})"
    if str(params.get("weights") or "").startswith("fitted elsewhere"):
        return (
            text + " was attacked with its own fitted weights; its training patients are those "
            "the member column names."
        )
    return text + " was refitted by medpriv on the training patients."


def plain_statement(run: dict) -> str:
    """What the model protects, in words a privacy officer can sign off."""
    privacy = _dict(run.get("privacy"))
    eps, delta = number(privacy.get("epsilon")), number(privacy.get("delta"))
    if eps is None:
        measured = []
        if (auc := _path(run, "attacks", "mia_loss", "auc")) is not None:
            measured.append(f"a loss-threshold membership attack reaches AUC {auc:.3f}")
        if (tpr := _path(run, "attacks", "mia_lira", "tpr_at_fpr", "0.001")) is not None:
            measured.append(
                f"LiRA finds {tpr:.1%} of training members at a 0.1% false-positive rate"
            )
        text = (
            "Nothing is formally protected: this model carries no differential-privacy guarantee."
        )
        if which := user_model(run):
            text = f"{which} {text}"
        if measured:
            text += " Measured: " + "; ".join(measured) + "."
        return text + chance_sentence(run)
    unit = str(privacy.get("unit") or "record")
    whole = " (all of its records together)" if privacy.get("level") not in (None, "sample") else ""
    factor = math.exp(eps)
    factor_text = f"{factor:,.0f}" if factor >= 100 else f"{factor:.3g}"
    change = (
        f"replacing any one {unit}'s data with another's"
        if privacy.get("adjacency") == "replace"
        else f"adding or removing any one {unit}'s data"
    )
    text = (
        f"Protects each {unit}{whole}: {change} changes the "
        f"probability of any outcome of training by at most a factor e^ε = {factor_text} "
        f"(ε = {eps:.3g})"
    )
    text += f", plus at most δ = {delta:.2g}." if delta else " (pure ε-DP)."
    how = []
    if privacy.get("accountant"):
        how.append(f"accountant {str(privacy['accountant']).upper()}")
    sampling = str(privacy.get("sampling") or "")
    if sampling.startswith("none"):
        how.append("no sampling" + sampling[len("none") :])
    elif sampling:
        q = number(privacy.get("sample_rate"))
        how.append(f"{sampling.capitalize()} sampling" + (f" (rate {q:.3g})" if q else ""))
    if (clip := number(privacy.get("clipping_norm"))) is not None:
        how.append(f"clipping at norm {clip:g}")
    if (sigma := number(privacy.get("noise_multiplier"))) is not None:
        how.append(f"noise multiplier {sigma:.3g}")
    if (steps := number(privacy.get("steps"))) is not None:
        how.append(f"{steps:,.0f} steps")
    if privacy.get("mechanism"):
        how.insert(0, str(privacy["mechanism"]))
    if how:
        text += " How: " + ", ".join(how) + "."
    if (verdict := audit_verdict(run)) is not None:
        text += " " + verdict
    text += chance_sentence(run)
    if reproducible_noise(run):
        text = f"NO GUARANTEE — {NO_GUARANTEE}. Were the noise fresh: {text}"
    return text


def chance_sentence(run: dict) -> str:
    """' Its test AUROC ... is no better than chance ...' when the run's 95% CI reaches 0.5."""
    utility = _dict(run.get("utility"))
    auc, ci = number(utility.get("auroc")), utility.get("auroc_ci95")
    if auc is None or not isinstance(ci, list | tuple) or len(ci) != 2:
        return ""
    low, high = number(ci[0]), number(ci[1])
    if low is None or high is None or low > 0.5:
        return ""
    return (
        f" Its test AUROC, {auc:.3f} (95% CI {low:.3f}–{high:.3f}), is {CHANCE}: this model has "
        "not learned to predict the outcome and should not be used."
    )


# ---------------------------------------------------------------- warnings


def warnings(document: dict) -> list[str]:
    """What a reader must not miss: failed audits, exceeded budgets, dropped data, a run cut
    short. Deduplicated, in a stable order."""
    found: dict[str, None] = {}
    runs = [r for r in document.get("runs") or [] if isinstance(r, dict)]
    if document.get("complete") is False:
        found[
            f"This document is incomplete ({len(runs)} runs finished): the run was interrupted; "
            "`medpriv run --resume RUN_DIR` completes it."
        ] = None
    for i, run in enumerate(runs):
        name = str(run.get("name") or f"run {i + 1}")
        audit = _dict(_dict(run.get("attacks")).get("audit"))
        if audit.get("consistent") is False:
            found[f"{name}: {audit_verdict(run)}"] = None
        for caveat in _dict(run.get("privacy")).get("caveats") or []:
            if "budget" in str(caveat):
                found[f"{group_label(run, i)}: {caveat}."] = None
        params = _dict(run.get("params"))
        for note in [*(params.get("partition_notes") or []), *(params.get("notes") or [])]:
            found[f"{run.get('method')}: {note}"] = None  # sites merged or dropped
    for note in _dict(document.get("dataset")).get("notes") or []:
        text = str(note)
        if "duplicate" in text.lower() or text.upper().startswith("WARNING"):
            found[text] = None
    return list(found)
