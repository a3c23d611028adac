"""A self-contained HTML report (inline CSS, base64 PNG figures) from a results.json document.

Only the standard library and matplotlib (via `medpriv.report.plots`, with numpy) are used, so
a report can be made on a machine without the ML stack. `write_report` is the only function
that writes. Every string from the document is escaped; only aggregates are shown.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from medpriv.attacks.catalog import ATTACK_TITLES
from medpriv.report import plots, summary, who_pays
from medpriv.report.frontier import audit_figure, frontier
from medpriv.report.plots import number

__all__ = ["render_report", "write_report"]

DASH = "—"

_CSS = """
:root { --ink: #1b2733; --muted: #5b6876; --line: #dde3ea; --band: #17324d; --accent: #2f6fb0;
  --zebra: #f6f8fa; --bad: #b42318; --bad-bg: #fdecea; --ok: #1f7a4d; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: var(--ink); background: #fff; }
header { background: var(--band); color: #fff; padding: 22px 0 18px; }
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 28px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; letter-spacing: .2px; }
header .meta { color: #c8d6e5; font-size: 13.5px; }
header .meta span + span::before { content: "·"; margin: 0 8px; color: #7f9bb8; }
main { padding: 8px 0 40px; }
section { margin-top: 30px; }
h2 { font-size: 19px; font-weight: 600; margin: 0 0 12px; padding-bottom: 6px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 15.5px; font-weight: 600; margin: 20px 0 8px; }
p { margin: 6px 0 10px; }
.muted, .note { color: var(--muted); font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .5px; }
.card .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 4px 0 8px; }
th, td { padding: 6px 11px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
thead th { background: #eef2f6; font-weight: 600; border-bottom: 2px solid #c9d3de;
  white-space: nowrap; }
thead tr.group th { text-align: center; border-bottom: 1px solid #c9d3de; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { font-weight: 600; white-space: nowrap; }
td.best { font-weight: 700; color: var(--accent); }
td.bad { color: var(--bad); font-weight: 700; }
td.good { color: var(--ok); }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  background: #eef2f6; color: var(--muted); white-space: nowrap; }
.tag.dp { background: #e6f1fb; color: var(--accent); font-weight: 600; }
.tag.bad { background: var(--bad); color: #fff; font-weight: 700; }
ul.statements { padding-left: 20px; margin: 6px 0; }
ul.statements li { margin: 4px 0; }
ul.statements ul.details { margin: 2px 0 0; padding-left: 18px; font-size: 13.5px; }
ul.statements ul.details li { margin: 1px 0; }
.alert { border-radius: 8px; padding: 14px 18px; margin: 18px 0 0; }
.alert-danger { background: var(--bad-bg); border: 2px solid var(--bad); color: var(--bad); }
.alert-danger strong.head { display: block; font-size: 16.5px; margin-bottom: 4px; }
.alert-danger ul { margin: 6px 0 0; padding-left: 20px; color: var(--ink); }
.alert-warn { background: #fff8e6; border: 1px solid #e0a800; }
.alert-warn strong.head { display: block; font-size: 15.5px; margin-bottom: 2px; }
.alert-warn ul { margin: 4px 0 0; padding-left: 20px; }
.best-key { font-weight: 700; color: var(--accent); }
.empty { border: 1px dashed #b8c4d0; border-radius: 8px; padding: 18px; color: var(--muted);
  background: var(--zebra); }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
details { margin-top: 8px; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--zebra); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  font-size: 12.5px; overflow-x: auto; }
footer { border-top: 1px solid var(--line); color: var(--muted); font-size: 12.5px;
  padding: 14px 0 30px; }
@media print { header { background: none; color: var(--ink); } header .meta { color: var(--muted); }
  figure, table { break-inside: avoid; } }
"""


# ---------------------------------------------------------------- small formatting helpers


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _fmt(value: Any, spec: str = ".3f") -> str:
    """A number formatted with `spec`; an em dash when absent or not finite."""
    x = number(value)
    return DASH if x is None else format(x, spec)


def _int(value: Any) -> str:
    x = number(value)
    if x is None:
        return DASH if value is None else _e(value)
    return f"{x:,.0f}" if x == int(x) else f"{x:,.2f}"


def _pct(value: Any) -> str:
    x = number(value)
    return DASH if x is None else f"{x:.1%}"


def _seconds(value: Any) -> str:
    x = number(value)
    return DASH if x is None else f"{x:.2f}" if x < 10 else f"{x:,.0f}"


def _bytes(value: Any) -> str:
    x = number(value)
    if x is None:
        return DASH
    for unit in ("B", "KB", "MB", "GB"):
        if abs(x) < 1000 or unit == "GB":
            return f"{x:,.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    return DASH


def _auroc(utility: dict) -> str:
    """'0.860 (0.840–0.880)', or just the estimate when the CI is missing."""
    point = _fmt(utility.get("auroc"))
    ci = utility.get("auroc_ci95")
    if point != DASH and isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = number(ci[0]), number(ci[1])
        if lo is not None and hi is not None:
            return f"{point} ({lo:.3f}–{hi:.3f})"
    return point


def _epsilon(privacy: dict) -> str | None:
    """ε as text, or None when the run is not private."""
    eps = privacy.get("epsilon")
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return None
    x = number(eps)
    return _e(eps) if x is None else f"{x:.3g}"


def _name(run: dict, index: int) -> str:
    return str(run.get("name") or f"run {index + 1}")


def _table(
    headers: Sequence[str | tuple[str, str]],
    rows: Iterable[Sequence[tuple[str, str]]],
    *,
    group_row: str = "",
) -> str:
    """An HTML table. Headers: text or (text, css class); cells: (escaped html, css class)."""
    head = "".join(
        f'<th class="{cls}">{_e(text)}</th>' if cls else f"<th>{_e(text)}</th>"
        for text, cls in (h if isinstance(h, tuple) else (h, "") for h in headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>" for cell, cls in r
        )
        + "</tr>"
        for r in rows
    )
    return (
        f'<div class="scroll"><table><thead>{group_row}<tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


# ---------------------------------------------------------------- page sections


def _header(results: dict, dataset: dict) -> str:
    name = dataset.get("name") or "unnamed dataset"
    meta = [f"medpriv {_e(results.get('medpriv_version') or 'unknown version')}"]
    meta.append(f"created {_e(results.get('created') or 'at an unknown time')}")
    if dataset.get("label"):
        meta.append(f"outcome: {_e(dataset['label'])}")
    if dataset.get("unit"):
        meta.append(f"privacy unit: {_e(dataset['unit'])}")
    spans = "".join(f"<span>{m}</span>" for m in meta)
    return (
        f'<header><div class="wrap"><h1>medpriv report — {_e(name)}</h1>'
        f'<div class="meta">{spans}</div></div></header>'
    )


def _headline_section(rows: list[summary.Row], measured_on: str = summary.MEASURED_ON) -> str:
    """One row per method and ε: utility, privacy spent, measured leakage and cost."""
    best = summary.best_rows(rows)
    columns = summary.visible_columns(rows)
    seeds = max(len(r.runs) for r in rows)
    headers: list[str | tuple[str, str]] = ["Method"] + [(c.title, "num") for c in columns]
    none = '<span class="tag">none</span>'
    body = [
        [(_e(row.label), "name")]
        + [
            (
                none if (text := summary.cell_text(row, c)) == "none" else _e(text),
                "num best" if i in best.get(c.key, ()) else "num",
            )
            for c in columns
        ]
        for i, row in enumerate(rows)
    ]
    spread = f"mean ± SD over {seeds} seeds" if seeds > 1 else "one seed; AUROC with 95% CI"
    return (
        '<section id="headline"><h2>Headline</h2>'
        + _table(headers, body)
        + f'<p class="note">Test split, {_e(spread)}. Best value per column in '
        '<span class="best-key">bold blue</span>: higher AUROC, AUPRC and accuracy; lower '
        "membership-attack success (MIA AUC: loss-threshold attack, 0.5 = chance; LiRA: share of "
        "members found at a 0.1% false-positive rate), audit ε̂ (in brackets: the most the audit "
        "could have shown) and training time. ε "
        "is per privacy unit and the largest over the seeds (the weakest guarantee among them); "
        f"“none” = no formal guarantee. {_e(measured_on)}.</p></section>"
    )


def _warnings_section(document: dict) -> str:
    found = summary.warnings(document)
    if not found:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in found)
    return (
        '<section id="warnings"><div class="alert alert-warn" role="note">'
        f'<strong class="head">Warnings</strong><ul>{items}</ul></div></section>'
    )


def _source(config: dict) -> str:
    """Where the data came from, from the resolved config (a path or 'synthetic')."""
    data = _dict(config.get("data"))
    spec = str(data.get("spec") or "")
    kind, _, where = spec.partition(":")
    described = {
        "synthetic": "built-in synthetic ICU cohort (MIMIC-III schema)",
        "mimic3": "MIMIC-III tables",
        "csv": "CSV file",
    }.get(kind, kind or "unknown")
    return f"{described}: {where}" if where else described


def _dataset_section(dataset: dict, config: dict) -> str:
    unit = dataset.get("unit") or "unit"
    cards = [
        ("records", _int(dataset.get("n_records"))),
        (f"{unit}s" if not str(unit).endswith("s") else str(unit), _int(dataset.get("n_units"))),
        ("features", _int(dataset.get("n_features"))),
        ("positive rate", _pct(dataset.get("positive_rate"))),
        ("sites", _int(dataset.get("n_sites"))),
    ]
    html = [
        '<section id="dataset"><h2>Dataset card</h2>'
        f'<p class="muted">Source: {_e(_source(config))}. Aggregates only — no patient row '
        f"appears in this report. {_e(summary.CARD_UNPROTECTED)}</p>"
        '<div class="cards">'
    ]
    html += [
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
        for k, v in cards
    ]
    html.append("</div>")
    facts = []
    if dataset.get("label"):
        facts.append(f"Outcome: {_e(dataset['label'])}")
    facts.append(f"privacy unit: {_e(unit)}")
    for key, title in (
        ("numeric_features", "numeric"),
        ("categorical_features", "categorical (one-hot encoded)"),
        ("sensitive_features", "sensitive (attribute-inference targets)"),
    ):
        names = [str(n) for n in dataset.get(key) or []]
        if names:
            shown = ", ".join(names[:12]) + (
                f" and {len(names) - 12} more" if len(names) > 12 else ""
            )
            facts.append(f"{len(names)} {title}: {_e(shown)}")
    sites = {str(k): v for k, v in _dict(dataset.get("site_sizes")).items()}
    if sites:
        facts.append(
            f"{len(sites)} sites: "
            + ", ".join(f"{_e(name)} ({_int(count)})" for name, count in sites.items())
        )
    html.append('<p class="muted">' + ". ".join(facts) + ".</p>")
    flow = [s for s in dataset.get("cohort_flow") or [] if isinstance(s, dict)]
    if flow:
        html.append("<h3>Cohort flow</h3>")
        rows = [
            [
                (_e(step.get("rule", DASH)), ""),
                (_int(step.get("excluded")), "num"),
                (_int(step.get("remaining")), "num"),
            ]
            for step in flow
        ]
        html.append(_table(["Step", ("Excluded", "num"), ("Remaining", "num")], rows))
    notes = [n for n in dataset.get("notes") or [] if n not in (None, "")]
    if notes:
        html.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    html.append("</section>")
    return "".join(html)


_RUN_HEADERS: list[str | tuple[str, str]] = [
    "Run",
    "Method",
    ("Seed", "num"),
    ("AUROC (95% CI)", "num"),
    ("AUPRC", "num"),
    ("Accuracy", "num"),
    ("Balanced acc.", "num"),
    ("F1", "num"),
    ("Brier", "num"),
    ("ε", "num"),
    ("δ", "num"),
    "Privacy unit",
    ("Train s", "num"),
]


def _runs_section(runs: list[dict]) -> str:
    aurocs = [number(_dict(r.get("utility")).get("auroc")) for r in runs]
    best = max((a for a in aurocs if a is not None), default=None)
    communicated = any(
        (number(_dict(r.get("cost")).get("bytes_communicated")) or 0) > 0 for r in runs
    )
    headers = [*_RUN_HEADERS, ("Communicated", "num")] if communicated else _RUN_HEADERS
    rows = []
    for i, run in enumerate(runs):
        utility, privacy = _dict(run.get("utility")), _dict(run.get("privacy"))
        eps = _epsilon(privacy)
        eps_cell = '<span class="tag">not private</span>' if eps is None else eps
        seed = run.get("seed")
        rows.append(
            [
                (_e(_name(run, i)), "name"),
                (_e(run.get("method") or DASH), ""),
                (_e(seed) if seed is not None else DASH, "num"),
                (_auroc(utility), "num best" if best is not None and aurocs[i] == best else "num"),
                (_fmt(utility.get("auprc")), "num"),
                (_fmt(utility.get("accuracy")), "num"),
                (_fmt(utility.get("balanced_accuracy")), "num"),
                (_fmt(utility.get("f1")), "num"),
                (_fmt(utility.get("brier"), ".4f"), "num"),
                (eps_cell, "num"),
                (_fmt(privacy.get("delta"), ".2g"), "num"),
                (_e(privacy.get("unit") or DASH), ""),
                (_seconds(_dict(run.get("cost")).get("train_seconds")), "num"),
            ]
        )
        if communicated:
            rows[-1].append((_bytes(_dict(run.get("cost")).get("bytes_communicated")), "num"))
    thresholds = {number(_dict(r.get("utility")).get("threshold")) for r in runs} - {None}
    at = f"{thresholds.pop():g}" if len(thresholds) == 1 else "each run's stored threshold"
    sizes = {number(_dict(r.get("utility")).get("n_test")) for r in runs} - {None}
    n_test = f" ({sizes.pop():,.0f} records)" if len(sizes) == 1 else ""
    parts = [
        '<section id="runs"><h2>Runs</h2>',
        _table(headers, rows),
        f'<p class="note">Metrics on the test split{n_test}. Accuracy, balanced accuracy and '
        f"F1 at threshold {_e(at)}; 95% AUROC interval by bootstrap; best AUROC highlighted; "
        "Brier score: lower is better.</p>",
        _val_threshold_table(runs),
        "</section>",
    ]
    return "".join(parts)


def _matrix_metrics(matrix: Any) -> dict[str, float]:
    """Sensitivity, specificity, accuracy, balanced accuracy and F1 from [[tn, fp], [fn, tp]]."""
    try:
        (tn, fp), (fn, tp) = ((number(v) for v in row) for row in matrix)
    except (TypeError, ValueError):
        return {}
    if None in (tn, fp, fn, tp) or tn + fp + fn + tp <= 0:
        return {}
    sens = tp / (tp + fn) if tp + fn else 0.0
    spec = tn / (tn + fp) if tn + fp else 0.0
    return {
        "sensitivity": sens,
        "specificity": spec,
        "accuracy": (tp + tn) / (tn + fp + fn + tp),
        "balanced_accuracy": (sens + spec) / 2,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
    }


def _val_threshold_table(runs: list[dict]) -> str:
    """Metrics at the threshold chosen on the validation split, when any run has one.

    Stored values are preferred; missing ones are derived from the confusion matrix there.
    """
    rows = []
    for i, run in enumerate(runs):
        u = _dict(run.get("utility"))
        if number(u.get("val_threshold")) is None:
            continue
        derived = _matrix_metrics(u.get("confusion_matrix_at_val_threshold"))

        def cell(key: str, u: dict = u, derived: dict = derived) -> tuple[str, str]:
            stored = number(u.get(f"{key}_at_val_threshold"))
            return _fmt(derived.get(key) if stored is None else stored), "num"

        rows.append(
            [
                (_e(_name(run, i)), "name"),
                (_fmt(u.get("val_threshold")), "num"),
                cell("sensitivity"),
                cell("specificity"),
                cell("accuracy"),
                cell("balanced_accuracy"),
                cell("f1"),
            ]
        )
    if not rows:
        return ""
    headers = [
        "Run",
        ("Threshold", "num"),
        ("Sensitivity", "num"),
        ("Specificity", "num"),
        ("Accuracy", "num"),
        ("Balanced acc.", "num"),
        ("F1", "num"),
    ]
    return (
        "<h3>At the validation-chosen threshold</h3>"
        + _table(headers, rows)
        + '<p class="note">Threshold maximising balanced accuracy on the validation split, '
        "applied to the test split.</p>"
    )


def _statement(privacy: dict) -> str:
    """The document's statement, or one rebuilt from the privacy fields."""
    if privacy.get("statement"):
        return str(privacy["statement"])
    eps, delta = number(privacy.get("epsilon")), number(privacy.get("delta"))
    text = f"({eps:.3g}" if eps is not None else f"({privacy.get('epsilon')}"
    text += f", δ = {delta:.2g})" if delta else ") (pure ε-DP)"
    parts = [
        f"{text}-differential privacy at the {privacy.get('level') or 'sample'} level, "
        f"privacy unit = {privacy.get('unit') or 'unknown'}"
    ]
    if privacy.get("accountant"):
        parts.append(f"accountant {privacy['accountant']}")
    if privacy.get("sampling"):
        parts.append(f"{privacy['sampling']} sampling")
    if number(privacy.get("clipping_norm")) is not None:
        parts.append(f"clipping norm {number(privacy.get('clipping_norm')):g}")
    return "; ".join(parts) + "."


def _privacy_section(runs: list[dict], rows: list[summary.Row]) -> str:
    """Per method and ε: what its weakest seed protects in plain words, every caveat, what is
    treated as public, whom it trusts and what it leaves unprotected (over all of its seeds),
    then the technical statement."""
    failed = {run_name for run_name, *_ in _inconsistent_audits(runs)}
    items = []
    for row in rows:
        run = row.statement_run
        privacy = _dict(run.get("privacy"))
        eps = _epsilon(privacy)
        tag = (
            f'<span class="tag dp">ε = {eps}</span>'
            if eps is not None
            else '<span class="tag">not private</span>'
        )
        if row.no_guarantee:
            tag += ' <span class="tag bad">NO GUARANTEE</span>'
        flag = (
            ' <span class="tag bad">audit failed</span>'
            if any(_name(r, 0) in failed for r in row.runs)
            else ""
        )
        details = "".join(
            f"<li><strong>{_e(title)}:</strong> {_e(sentence)}.</li>"
            for title, sentences in summary.statement_details(row)
            for sentence in sentences
        )
        technical = (
            f'<details><summary>Technical statement</summary><span class="muted">'
            f"{_e(_statement(privacy))}</span></details>"
            if eps is not None or privacy.get("caveats")
            else ""
        )
        items.append(
            f"<li>{tag} <strong>{_e(row.label)}</strong>{flag}: "
            f"{_e(summary.plain_statement(run))}"
            + (f'<ul class="details">{details}</ul>' if details else "")
            + technical
            + "</li>"
        )
    return (
        '<section id="privacy"><h2>Privacy statements</h2><ul class="statements">'
        + "".join(items)
        + '</ul><p class="note">ε bounds how much any one privacy unit can change what the model '
        "reveals (smaller is stronger; ε ≤ 1 is strong, ε ≈ 8 is weak but still bounded); δ is "
        "the small probability the bound fails and is kept below 1/(number of units). With "
        "several seeds the statement is the one with the largest ε. The accountant composes "
        "the training steps; Poisson sampling is what the accounting assumes. Attack numbers "
        "measure leakage; only ε is a guarantee, and an audit that does not contradict it does "
        "not confirm it.</p></section>"
    )


_KNOWN_METRICS = ("auc", "advantage", "tpr_at_fpr", "epsilon_lower_bound", "confidence")
_METRIC_TITLES = {
    "auc": "AUC",
    "advantage": "advantage",
    "epsilon_lower_bound": "ε lower bound",
    "max_demonstrable": "could show at most",
    "claimed_epsilon": "claimed ε",
    "confidence": "confidence",
    "consistent": "verdict",
    "accuracy_b1": "reconstructed, 1 record",
    "baseline_b1": "baseline",
    "accuracy_dp_b1": "with DP",
    "accuracy_secagg": "SecAgg sum",
}


def _attacks_of(run: dict) -> dict[str, Any]:
    """A run's attack blocks as the attack tables show them: the canary audit as one table per
    threat model (its top-level summary repeats the deciding one)."""
    found: dict[str, Any] = {}
    for attack, result in _dict(run.get("attacks")).items():
        threat_models = {k: v for k, v in _dict(result).items() if k in summary.AUDIT_KINDS}
        if attack == "audit" and threat_models:
            found.update({f"audit_{k}": v for k, v in threat_models.items()})
        else:
            found[attack] = result
    return found


def _attack_columns(runs: list[dict]) -> dict[str, list[str]]:
    """attack name -> metric keys present for it in any run, in a stable, readable order."""
    found: dict[str, dict[str, None]] = {}
    for run in runs:
        for attack, result in _attacks_of(run).items():
            keys = found.setdefault(str(attack), {})
            result = _dict(result)
            for key in _KNOWN_METRICS:
                if key == "tpr_at_fpr":
                    for fpr in _dict(result.get(key)):
                        keys[f"tpr_at_fpr:{fpr}"] = None
                elif key in result:
                    keys[key] = None
            extra = sorted(
                k
                for k, v in result.items()
                if k not in _KNOWN_METRICS and isinstance(v, int | float | str | bool)
            )
            keys.update(dict.fromkeys(extra))
    return {attack: list(keys) for attack, keys in found.items()}


def _metric_title(key: str) -> str:
    if key.startswith("tpr_at_fpr:"):
        return f"TPR @ FPR {key.split(':', 1)[1]}"
    return _METRIC_TITLES.get(key, key.replace("_", " "))


def _metric_cell(result: dict, key: str) -> tuple[str, str]:
    if key.startswith("tpr_at_fpr:"):
        value = _dict(result.get("tpr_at_fpr")).get(key.split(":", 1)[1])
    else:
        value = result.get(key)
    if key == "consistent" and isinstance(value, bool):  # never "confirmed": little power
        return ("not contradicted", "") if value else ("CONTRADICTED", "bad")
    if key == "verdict" and isinstance(value, str):
        return (_e(value.upper()), "bad") if value.startswith("contradicted") else (_e(value), "")
    if isinstance(value, bool) or (value is not None and number(value) is None):
        return _e(value), ""
    if key == "confidence":
        return _pct(value), "num"
    if key == "delta":
        return _fmt(value, ".2g"), "num"
    return _fmt(value), "num"


COUNT_KEYS = frozenset({"canaries", "canaries_included", "guesses", "correct", "steps"})


def _inconsistent_audits(runs: list[dict]) -> list[tuple[str, str, dict, dict]]:
    """(run name, attack name, attack result, privacy) for every audit with consistent=false."""
    return [
        (_name(run, i), str(attack), _dict(result), _dict(run.get("privacy")))
        for i, run in enumerate(runs)
        for attack, result in _dict(run.get("attacks")).items()
        if _dict(result).get("consistent") is False
    ]


def _no_guarantee_banner(rows: list[summary.Row]) -> str:
    """A red banner for every method and ε trained with replayable noise."""
    notes = summary.no_guarantee_notes(rows)
    if not notes:
        return ""
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return (
        '<div class="alert alert-danger" id="no-guarantee" role="alert"><strong class="head">'
        "⚠ No privacy guarantee: reproducible noise</strong>Whatever ε these models show, "
        f"their noise can be regenerated from the run seed; do not release them.<ul>{items}</ul>"
        "</div>"
    )


def _audit_warning(runs: list[dict]) -> str:
    bad = _inconsistent_audits(runs)
    if not bad:
        return ""
    items = []
    for run_name, attack, result, privacy in bad:
        claimed = _epsilon(privacy)
        bound = _fmt(result.get("epsilon_lower_bound"), ".3g")
        conf = number(result.get("confidence"))
        conf_text = f" at {conf:.0%} confidence" if conf is not None else ""
        claim = f"the claimed ε = {claimed}" if claimed else "a run that claims no ε"
        said = summary.audit_verdict({"attacks": {"audit": result}}) if attack == "audit" else None
        items.append(
            f"<li><strong>{_e(run_name)}</strong> — {_e(said)}</li>"
            if said
            else f"<li><strong>{_e(run_name)}</strong> — {_e(attack)}: empirical ε lower bound "
            f"{bound}{conf_text} is inconsistent with {claim}.</li>"
        )
    return (
        '<div class="alert alert-danger" role="alert"><strong class="head">⚠ Privacy audit '
        "failed: the stated guarantee is contradicted by measurement</strong>"
        "The DP implementation or its accounting is likely wrong for the runs below; do not "
        f"rely on their ε until this is resolved.<ul>{''.join(items)}</ul></div>"
    )


def _attack_table(attack: str, keys: list[str], runs: list[dict]) -> str:
    """One attack: numeric metrics as columns, one row per attacked run; text fields (method,
    variant, target) listed once below."""
    numeric = [
        k
        for k in keys
        if k in ("consistent", "verdict") or _numeric_column(attack, k, runs)
        if not (k == "power" and "max_demonstrable" in keys)  # the same number, said once
        if not (k == "consistent" and "verdict" in keys)
    ]
    texts: dict[str, dict[str, None]] = {}
    rows = []
    for i, run in enumerate(runs):
        result = _attacks_of(run).get(attack)
        if not isinstance(result, dict):
            continue
        rows.append(
            [(_e(_name(run, i)), "name")]
            + [
                _count_cell(result.get(k))
                if k.startswith("n_") or k in COUNT_KEYS
                else _metric_cell(result, k)
                for k in numeric
            ]
        )
        for key in keys:
            value = result.get(key)
            if key not in numeric and isinstance(value, str) and value:
                texts.setdefault(key, {})[value] = None
    headers: list[str | tuple[str, str]] = ["Run"] + [(_metric_title(k), "num") for k in numeric]
    notes = "; ".join(
        f"{_e(key.replace('_', ' '))}: {_e(' / '.join(values))}" for key, values in texts.items()
    )
    return (
        f"<h3>{_e(ATTACK_TITLES.get(attack, attack))}</h3>"
        + _table(headers, rows)
        + (f'<p class="note">{notes}</p>' if notes else "")
    )


def _numeric_column(attack: str, key: str, runs: list[dict]) -> bool:
    """Whether `key` of `attack` holds a number (or a TPR map) in some run."""
    if key.startswith("tpr_at_fpr:"):
        return True
    for run in runs:
        value = _dict(_attacks_of(run).get(attack)).get(key)
        if number(value) is not None:
            return True
    return False


def _count_cell(value: Any) -> tuple[str, str]:
    return _int(value), "num"


def _attacks_section(runs: list[dict]) -> str:
    columns = _attack_columns(runs)
    if not columns:
        return ""
    tables = "".join(_attack_table(attack, keys, runs) for attack, keys in columns.items())
    return (
        '<section id="attacks"><h2>Attacks</h2>'
        + tables
        + '<p class="note">Membership-inference AUC near 0.5 and advantage near 0 mean little '
        "measurable leakage; an audit's ε lower bound must not exceed the claimed ε. An audit "
        "whose bound stays below ε has not contradicted the claim, which is all it shows: "
        f"{_e(summary.AUDIT_POWER)}.</p>"
        "</section>"
    )


def _who_pays_section(rows: list[summary.Row]) -> str:
    """Per attribute: each group's test AUROC per method (a private model's gap to its
    non-private counterpart beside it) and its membership exposure."""
    tables = who_pays.attribute_tables(rows)
    if not tables:
        return ""
    parts = []
    for table in tables:
        labels = [row.label for row in rows if row.label in table.cells]
        headers = ["Group", ("Test patients", "num")] + [(label, "num") for label in labels]
        utility = [
            [(_e(group), ""), (_e(who_pays.units_text(table.units[group])), "num")]
            + [(_e(who_pays.utility_text(table.cells[label][group])), "num") for label in labels]
            for group in table.groups
        ]
        exposure = [
            [(_e(group), ""), (_e(who_pays.units_text(table.units[group])), "num")]
            + [(_e(who_pays.exposure_text(table.cells[label][group])), "num") for label in labels]
            for group in table.groups
        ]
        parts.append(
            f'<h3>{_e(table.attribute)} <span class="muted">({_e(table.source)})</span></h3>'
            '<p class="muted">Test AUROC</p>'
            + _table(headers, utility)
            + '<p class="muted">Membership exposure: TPR at 1% FPR</p>'
            + _table(headers, exposure)
        )
    gaps = who_pays.largest_gaps(rows, tables)
    summary_list = "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in gaps) + "</ul>" if gaps else ""
    return (
        '<section id="who-pays"><h2>Who pays — subgroups</h2>'
        + summary_list
        + "".join(parts)
        + f'<p class="note">{_e(who_pays.note(rows))}.</p></section>'
    )


# ---------------------------------------------------------------- figures


def _png(fig: Figure, dpi: int = 110) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    fig.clear()
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _audit_figure(rows: list[summary.Row]) -> str:
    """Claimed vs audited ε as a figure, or nothing (never costs the report)."""
    try:
        fig = audit_figure(rows)
    except Exception as error:  # a malformed field must not cost the whole report
        kind = _e(type(error).__name__)
        return f'<p class="note">The audit figure could not be drawn: {kind}</p>'
    if fig is None:
        return ""
    return (
        '<figure><img alt="Claimed against audited ε" '
        f'src="data:image/png;base64,{_png(fig)}"><figcaption>Claimed ε against the canary '
        "audits' ε̂ (circles: white-box, triangles: black-box; faint ticks: the most each audit "
        "could show). A point above the diagonal contradicts its claim.</figcaption></figure>"
    )


def _frontier_section(rows: list[summary.Row]) -> str:
    try:
        fig = frontier(rows)
    except Exception as error:  # a malformed field must not cost the whole report
        return (
            '<section id="frontier"><h2>Privacy–utility frontier</h2><p class="note">The '
            f"frontier could not be drawn: {_e(type(error).__name__)}: {_e(error)}</p></section>"
        )
    if fig is None:
        return ""
    return (
        '<section id="frontier"><h2>Privacy–utility frontier</h2><figure class="wide">'
        f'<img alt="Privacy–utility frontier" src="data:image/png;base64,{_png(fig)}">'
        "<figcaption>Left: test AUROC against the ε spent (private runs; dotted lines are "
        "runs without a guarantee). Right: test AUROC against what LiRA actually recovers — the "
        "share of training members it identifies at a 0.1% false-positive rate (dashed: "
        "chance). One point per method and ε: mean over seeds with SD bars (one seed: the "
        "AUROC's 95% CI); faint dots are single seeds. Up and to the left is better."
        "</figcaption></figure>" + _audit_figure(rows) + "</section>"
    )


def _figures_section(runs: list[dict], rows: list[summary.Row]) -> str:
    first_of_each = [row.runs[0] for row in rows]  # the first seed of each method and ε
    specs: list[tuple[str, str, Callable[[list[dict]], Figure | None], bool, bool]] = [
        (
            "ROC curves",
            "ROC curve per run on the test split; dashed diagonal = chance.",
            plots.roc_curves,
            any(plots.has_curve(r, "roc") for r in runs),
            False,
        ),
        (
            "Precision-recall curves",
            "Precision-recall per run on the test split; dashed line = positive rate.",
            plots.pr_curves,
            any(plots.has_curve(r, "pr") for r in runs),
            False,
        ),
        (
            "Privacy spent",
            "ε per privacy unit after each epoch, from the run's accountant.",
            plots.epsilon_curves,
            True,
            False,
        ),
        (
            "Membership inference",
            "ROC of each membership-inference attack on the attack pool, log-log so that the "
            "low false-positive region (where a confident attack matters) is visible; dashed "
            "diagonal = chance.",
            plots.attack_roc_curves,
            any(plots.has_attack_roc(r) for r in runs),
            True,
        ),
        (
            "Gradient inversion",
            "Share of a client's features an honest-but-curious server reconstructs from one "
            "update (TabLeak-style; continuous within ±0.319 SD), by batch size; triangles: the "
            "same with sample-level DP noise, diamonds: only the SecAgg sum of several clients; "
            "dashed: guessing from the feature distribution.",
            plots.inversion_accuracy,
            any(plots.has_inversion(r) for r in runs),
            False,
        ),
        (
            "Split-learning leakage",
            "What the split-learning server learns. Label leakage: AUC of the labels it "
            "infers from the gradients a U-shaped client sends back (norm and cosine attacks; "
            "0.5 = chance). Inputs from activations (when that attack ran): share of input "
            "features it reconstructs with an inverse network trained on auxiliary patients "
            "(continuous within ±0.319 SD); the dash is guessing from the feature distribution.",
            plots.split_leakage,
            any(plots.has_split_leakage(r) for r in runs),
            True,
        ),
        (
            "Calibration",
            "Observed outcome rate against mean predicted risk in equal-count bins of the test "
            "split (first seed of each method); the dashed diagonal is perfect calibration.",
            lambda _: plots.calibration_curves(first_of_each),
            any(plots.has_calibration(r) for r in runs),
            False,
        ),
        (
            "Federated rounds",
            "Per round of each federated run: the global model's validation AUROC (× marks a "
            "round where a client dropped out), the clients' training loss (mean; band = "
            "min–max over clients) and cumulative bytes sent both ways.",
            plots.federated_rounds,
            any(plots.has_rounds(r) for r in runs),
            True,
        ),
        (
            "Confusion matrices",
            "Test confusion matrices (counts and share of all test records); colour shows the "
            "share of each true class.",
            plots.confusion_matrices,
            any(plots.has_confusion(r) for r in runs),
            True,
        ),
        (
            "Training curves",
            "Per-epoch loss (solid: train, dashed: validation) and validation AUROC.",
            plots.training_curves,
            any(plots.has_history(r) for r in runs),
            True,
        ),
    ]
    cards = []
    for title, caption, draw, wanted, wide in specs:
        if not wanted:
            continue
        try:
            fig = draw(runs)
        except Exception as error:  # a malformed field must not cost the whole report
            cards.append(
                f'<figure><p class="note">{_e(title)} could not be drawn: '
                f"{_e(type(error).__name__)}: {_e(error)}</p></figure>"
            )
            continue
        if fig is None:
            continue
        cls = ' class="wide"' if wide else ""
        cards.append(
            f'<figure{cls}><img alt="{_e(title)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption><strong>{_e(title)}.</strong> {_e(caption)}</figcaption></figure>"
        )
    if not cards:
        return ""
    return (
        f'<section id="figures"><h2>Figures</h2><div class="figs">{"".join(cards)}</div></section>'
    )


def _config_section(config: Any) -> str:
    if not config:
        return ""
    text = json.dumps(config, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return (
        '<section id="config"><h2>Configuration</h2><details><summary>Show the experiment '
        f"configuration</summary><pre>{_e(text)}</pre></details></section>"
    )


# ---------------------------------------------------------------- public API


def render_report(results: dict) -> str:
    """The full HTML page for a results.json document (CSS inline, figures as base64 PNG)."""
    results = _dict(results)
    dataset = _dict(results.get("dataset"))
    runs = [r for r in results.get("runs") or [] if isinstance(r, dict)]
    title = f"medpriv report — {dataset.get('name') or 'unnamed dataset'}"
    if runs:
        rows = summary.headline(runs)
        body = (
            _no_guarantee_banner(rows)
            + _audit_warning(runs)
            + _warnings_section(results)
            + _headline_section(rows, summary.measured_on(results))
            + _frontier_section(rows)
            + _privacy_section(runs, rows)
            + _dataset_section(dataset, _dict(results.get("config")))
            + _runs_section(runs)
            + _attacks_section(runs)
            + _who_pays_section(rows)
            + _figures_section(runs, rows)
        )
    else:
        body = (
            _warnings_section(results)
            + _dataset_section(dataset, _dict(results.get("config")))
            + '<section id="runs"><h2>Runs</h2><div class="empty">No runs in this results '
            "document yet.</div></section>"
        )
    body += _config_section(results.get("config"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"{_header(results, dataset)}"
        f'<main><div class="wrap">{body}</div></main>'
        '<footer><div class="wrap">Generated by medpriv.report from results.json. Aggregate '
        "statistics only; no individual records are included.</div></footer>"
        "</body></html>\n"
    )


def write_report(results: dict, path: Path) -> Path:
    """Render and write the report atomically (temp file in the same directory, then rename)."""
    from medpriv.files import write_text_atomic  # here: rendering needs no other medpriv module

    return write_text_atomic(render_report(results), path)
