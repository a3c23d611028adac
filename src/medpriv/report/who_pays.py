"""The report's "who pays" tables, read from each run's `subgroups` block: per attribute (a
sensitive column, the age band, the site) and group, each method's test AUROC, the private
model's AUROC gap to its non-private counterpart (seed by seed), calibration and membership
exposure — means over seeds. Standard library only; aggregates only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medpriv.report.plots import number
from medpriv.report.summary import Row, Stat, counterpart_by_seed

EXPOSURE_FPR = "0.01"  # the membership TPR shown per group
MEASURED_ON = (
    "Test AUROC per group (mean over seeds); a private model's gap is its non-private "
    "counterpart's AUROC in the same group minus its own, seed by seed. Exposure: membership "
    "TPR at 1% FPR of the strongest membership attack run, the group's training patients as "
    "members and its test patients as non-members (“—” where the group has under 100 test "
    "records, too few to resolve 1%). Groups of a few hundred patients give noisy figures: "
    "compare over several seeds before acting on one group's gap. Groups with fewer than "
    "{min_units} {unit}s are suppressed; their complement can still be read from the overall "
    "figures, so suppression keeps small groups from being described, it is not a privacy guarantee"
)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class GroupCell:
    """One method's figures in one group, over its seeds."""

    auroc: Stat
    gap: Stat
    calibration_gap: Stat
    exposure: Stat
    suppressed: bool = False


@dataclass(frozen=True)
class AttributeTable:
    """One attribute's groups and, per headline row, its cell in each group."""

    attribute: str
    source: str
    groups: tuple[str, ...]
    units: dict[str, Stat]
    cells: dict[str, dict[str, GroupCell]]  # row label -> group -> cell


def _group(run: dict, attribute: str, group: str) -> dict | None:
    for entry in _dict(run.get("subgroups")).get("attributes") or []:
        if _dict(entry).get("attribute") == attribute:
            for found in entry.get("groups") or []:
                if _dict(found).get("group") == group:
                    return found
    return None


def _attributes(rows: list[Row]) -> dict[str, tuple[str, list[str]]]:
    """attribute -> (source, groups in first-seen order) over every run."""
    found: dict[str, tuple[str, list[str]]] = {}
    for row in rows:
        for run in row.runs:
            for entry in _dict(run.get("subgroups")).get("attributes") or []:
                entry = _dict(entry)
                name = str(entry.get("attribute"))
                _, groups = found.setdefault(name, (str(entry.get("source") or ""), []))
                for group in entry.get("groups") or []:
                    label = str(_dict(group).get("group"))
                    if label not in groups:
                        groups.append(label)
    return found


def _cell(row: Row, rows: list[Row], attribute: str, group: str) -> GroupCell:
    found = [(run, _group(run, attribute, group)) for run in row.runs]
    present = [(run, g) for run, g in found if g is not None and not g.get("suppressed")]

    def read(run: dict) -> float | None:
        return number(_dict(_group(run, attribute, group)).get("auroc"))

    reference = counterpart_by_seed(row, rows, read)
    gaps = [
        reference[run.get("seed")] - value
        for run, g in present
        if run.get("seed") in reference and (value := number(g.get("auroc"))) is not None
    ]
    return GroupCell(
        auroc=Stat.of([number(g.get("auroc")) for _, g in present]),
        gap=Stat.of(gaps),
        calibration_gap=Stat.of([number(g.get("calibration_gap")) for _, g in present]),
        exposure=Stat.of(
            [
                number(_dict(_dict(g.get("membership")).get("tpr_at_fpr")).get(EXPOSURE_FPR))
                for _, g in present
            ]
        ),
        suppressed=bool(found) and not present and any(g is not None for _, g in found),
    )


def attribute_tables(rows: list[Row]) -> list[AttributeTable]:
    """One table per attribute the runs were split by (empty when no run has subgroups)."""
    tables = []
    for attribute, (source, groups) in _attributes(rows).items():
        units = {
            group: Stat.of(
                [
                    number(_dict(_group(run, attribute, group)).get("units"))
                    for row in rows
                    for run in row.runs
                ]
            )
            for group in groups
        }
        cells = {
            row.label: {group: _cell(row, rows, attribute, group) for group in groups}
            for row in rows
        }
        tables.append(AttributeTable(attribute, source, tuple(groups), units, cells))
    return tables


def largest_gaps(rows: list[Row], tables: list[AttributeTable]) -> list[str]:
    """Per private row: the group where it loses most AUROC against its counterpart, beside
    its overall gap — the plain answer to "who pays for the privacy"."""
    sentences = []
    for row in rows:
        worst: tuple[float, str, str] | None = None
        for table in tables:
            for group, cell in table.cells.get(row.label, {}).items():
                if cell.gap.mean is not None and (worst is None or cell.gap.mean > worst[0]):
                    worst = (cell.gap.mean, table.attribute, group)
        overall = row.stats["gap"].mean
        if worst is None or overall is None:
            continue
        sentences.append(
            f"{row.label}: largest AUROC loss in {worst[1]} = {worst[2]} "
            f"({worst[0]:+.3f}, overall {overall:+.3f})"
        )
    return sentences


def min_units(rows: list[Row]) -> tuple[int | None, str]:
    """(the suppression threshold, the privacy unit's name) the runs used."""
    for row in rows:
        for run in row.runs:
            block = _dict(run.get("subgroups"))
            if block:
                found = number(block.get("min_units"))
                return (int(found) if found is not None else None), str(
                    block.get("unit") or "patient"
                )
    return None, "patient"


def utility_text(cell: GroupCell) -> str:
    """'0.812', '0.790 (gap +0.022)', 'suppressed' or an em dash."""
    if cell.suppressed:
        return "suppressed"
    if cell.auroc.mean is None:
        return "—"
    text = f"{cell.auroc.mean:.3f}"
    return text if cell.gap.mean is None else f"{text} (gap {cell.gap.mean:+.3f})"


def exposure_text(cell: GroupCell) -> str:
    """Membership TPR at 1% FPR as a percentage, 'suppressed' or an em dash."""
    if cell.suppressed:
        return "suppressed"
    return "—" if cell.exposure.mean is None else f"{cell.exposure.mean:.1%}"


def units_text(stat: Stat) -> str:
    return "—" if stat.mean is None else f"{stat.mean:,.0f}"


def note(rows: list[Row]) -> str:
    threshold, unit = min_units(rows)
    return MEASURED_ON.format(min_units=threshold if threshold is not None else "?", unit=unit)


def source_text(table: AttributeTable) -> str:
    """' (sensitive column)' where the attribute's name does not say where it comes from."""
    return f" ({table.source})" if table.source not in ("", table.attribute) else ""
