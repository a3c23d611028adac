"""report.md: the headline table, warnings, privacy statements and the dataset card as plain
Markdown — for a ticket, an e-mail or a diff between runs. Figures stay in report.html."""

from __future__ import annotations

from typing import Any

from medpriv.report import summary, who_pays
from medpriv.report.plots import number


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _headline(runs: list[dict], measured_on: str = summary.MEASURED_ON) -> list[str]:
    rows = summary.headline(runs)
    best = summary.best_rows(rows)
    columns = summary.visible_columns(rows)
    body = []
    for i, row in enumerate(rows):
        cells = [row.label]
        for column in columns:
            text = summary.cell_text(row, column)
            cells.append(f"**{text}**" if i in best.get(column.key, ()) else text)
        body.append(cells)
    seeds = max(len(r.runs) for r in rows)
    spread = f"mean ± SD over {seeds} seeds" if seeds > 1 else "one seed; AUROC with 95% CI"
    return [
        "## Headline",
        "",
        *_table(["Method"] + [c.title for c in columns], body),
        "",
        f"Test split, {spread}; best per column in bold. ε is per privacy unit and the "
        "largest over the seeds (the weakest guarantee among them); “none” = no formal "
        f"guarantee. {measured_on}.",
        "",
    ]


def _dataset(document: dict) -> list[str]:
    d = document.get("dataset") or {}
    spec = (document.get("config") or {}).get("data", {}).get("spec", "unknown")
    lines = ["## Dataset card", "", f"- source: `{spec}`"]
    for key, title in (
        ("n_records", "records"),
        ("n_units", f"{d.get('unit') or 'unit'}s"),
        ("n_features", "features"),
        ("n_sites", "sites"),
    ):
        if number(d.get(key)) is not None:
            lines.append(f"- {title}: {number(d[key]):,.0f}")
    if number(d.get("positive_rate")) is not None:
        lines.append(f"- outcome ({d.get('label') or 'label'}) rate: {d['positive_rate']:.1%}")
    sites = d.get("site_sizes") or {}
    if isinstance(sites, dict) and sites:
        counts = {k: number(v) for k, v in sites.items()}
        lines.append(
            "- records per site: "
            + ", ".join(f"{k} {v:,.0f}" if v is not None else str(k) for k, v in counts.items())
        )
    lines += ["", summary.CARD_UNPROTECTED]
    flow = [s for s in d.get("cohort_flow") or [] if isinstance(s, dict)]
    if flow:
        lines += ["", "Cohort flow:", ""]
        lines += _table(
            ["step", "excluded", "remaining"],
            [
                [str(s.get("rule")), f"{s.get('excluded', 0):,}", f"{s.get('remaining', 0):,}"]
                for s in flow
            ],
        )
    return [*lines, ""]


def _statements(rows: list[summary.Row]) -> list[str]:
    """Per method and ε: the plain statement of its weakest seed, then every caveat, what is
    treated as public, whom it trusts and what it does not protect, over all of its seeds."""
    lines = ["## Privacy statements", ""]
    for row in rows:
        lines.append(f"- **{row.label}**: {summary.plain_statement(row.statement_run)}")
        for title, sentences in summary.statement_details(row):
            lines += [f"  - {title}: {sentence}." for sentence in sentences]
    return [*lines, ""]


def _who_pays(rows: list[summary.Row]) -> list[str]:
    tables = who_pays.attribute_tables(rows)
    if not tables:
        return []
    lines = ["## Who pays — subgroups", ""]
    lines += [f"- {s}" for s in who_pays.largest_gaps(rows, tables)]
    for table in tables:
        labels = [row.label for row in rows if row.label in table.cells]
        lines += ["", f"### {table.attribute}{who_pays.source_text(table)}", ""]
        lines += _table(
            ["Group", "Test patients"]
            + [f"{label} AUROC" for label in labels]
            + [f"{label} TPR@1%FPR" for label in labels],
            [
                [group, who_pays.units_text(table.units[group])]
                + [who_pays.utility_text(table.cells[label][group]) for label in labels]
                + [who_pays.exposure_text(table.cells[label][group]) for label in labels]
                for group in table.groups
            ],
        )
    return [*lines, "", who_pays.note(rows) + ".", ""]


def render_markdown(document: dict) -> str:
    """The Markdown companion of report.html."""
    runs = [r for r in document.get("runs") or [] if isinstance(r, dict)]
    name = (document.get("dataset") or {}).get("name") or "unnamed dataset"
    lines = [
        f"# medpriv report — {name}",
        "",
        f"medpriv {document.get('medpriv_version', '?')}, created {document.get('created', '?')}. "
        "Figures are in report.html beside this file. Aggregates only.",
        "",
    ]
    rows = summary.headline(runs) if runs else []
    for note in summary.no_guarantee_notes(rows):
        lines += [f"> **NO PRIVACY GUARANTEE** — {note}", ""]
    warnings = summary.warnings(document)
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    if runs:
        lines += _headline(runs, summary.measured_on(document))
        lines += _statements(rows)
        lines += _who_pays(rows)
    else:
        lines += ["No runs in this results document yet.", ""]
    lines += _dataset(document)
    return "\n".join(lines)
