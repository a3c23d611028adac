"""The privacy–utility frontier: test AUROC against ε and against LiRA's TPR at 0.1% FPR, one
point per method and ε (AUROC and TPR: mean over seeds, bars = SD; ε: the largest over seeds,
the headline's), faint dots for the single runs."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from medpriv.report.plots import _colors, _figure, _label, _style
from medpriv.report.summary import AUDIT_KINDS, HEADLINE_COLUMNS, Row, _path

_READ = {c.key: c.read for c in HEADLINE_COLUMNS}


def _points(row: Row, key: str) -> list[tuple[float, float]]:
    """(x, AUROC) of each run of the row that has both."""
    out = []
    for run in row.runs:
        x, y = _READ[key](run), _READ["auroc"](run)
        if x is not None and y is not None:
            out.append((x, y))
    return out


def _row_label(row: Row) -> str:
    return _label(row.label, 32) + (" (NO GUARANTEE)" if row.no_guarantee else "")


def _draw(ax: Axes, row: Row, key: str, color: object) -> bool:
    """One row on one panel; False when the row lacks the x value."""
    points = _points(row, key)
    if not points:
        return False
    x, y = row.stats[key], row.stats["auroc"]
    if len(points) > 1:
        ax.scatter(*zip(*points, strict=True), s=12, color=color, alpha=0.35, lw=0)
    yerr = y.sd
    if yerr is None and (ci := row.auroc_ci) is not None:
        yerr = [[max(y.mean - ci[0], 0.0)], [max(ci[1] - y.mean, 0.0)]]
    headline_eps = key == "epsilon"
    ax.errorbar(
        [x.max if headline_eps else x.mean],
        [y.mean],
        xerr=None if headline_eps else x.sd,
        yerr=yerr,
        fmt="o",
        ms=7,
        capsize=3,
        color=color,
        label=_row_label(row),
    )
    return True


def frontier(rows: Sequence[Row]) -> Figure | None:
    """Two panels sharing the AUROC axis; None when no run is private or attacked by LiRA."""
    rows = [r for r in rows if r.stats["auroc"].mean is not None]
    if not any(r.private or r.stats["lira_tpr"].mean is not None for r in rows):
        return None
    fig, (by_eps, by_lira) = _figure(11.0, 4.6, ncols=2, sharey=True)
    colors = _colors(len(rows))
    private = [(r, c) for r, c in zip(rows, colors, strict=True) if r.private]
    for row, color in private:
        _draw(by_eps, row, "epsilon", color)
    for row, color in zip(rows, colors, strict=True):
        if not row.private:
            by_eps.axhline(row.stats["auroc"].mean, ls=":", lw=1.4, color=color)
    if private:
        epsilons = sorted({r.epsilon for r, _ in private})
        if epsilons[0] > 0 and epsilons[-1] / epsilons[0] >= 4:
            by_eps.set_xscale("log")
            by_eps.xaxis.set_minor_formatter(NullFormatter())
            by_eps.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            if len(epsilons) <= 8:
                by_eps.set_xticks(epsilons, [f"{e:.2g}" for e in epsilons])
            by_eps.set_xlim(epsilons[0] / 1.5, epsilons[-1] * 1.5)
        else:
            by_eps.set_xlim(0, epsilons[-1] * 1.25)
    else:
        by_eps.text(0.5, 0.5, "no private run", ha="center", transform=by_eps.transAxes)
    by_eps.set(
        xlabel="ε (smaller is more private)",
        ylabel="Test AUROC",
        title="AUROC vs ε (dotted: not private)",
    )
    plotted = [
        _draw(by_lira, row, "lira_tpr", color) for row, color in zip(rows, colors, strict=True)
    ]
    if not any(plotted):
        by_lira.text(
            0.5, 0.5, "no LiRA results", ha="center", color="#666", transform=by_lira.transAxes
        )
    by_lira.set(
        xlabel="LiRA TPR at 0.1% FPR (smaller leaks less)", title="AUROC vs measured leakage"
    )
    by_lira.axvline(0.001, ls="--", lw=1, color="#999")  # chance: TPR = FPR
    by_lira.set_xlim(left=0)
    by_lira.xaxis.set_major_locator(MaxNLocator(5))
    by_lira.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1%}"))
    for ax in (by_eps, by_lira):
        _style(ax)
    handles, labels = {}, []
    for ax in (by_eps, by_lira):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    for row, color in zip(rows, colors, strict=True):  # rows drawn only as lines
        label = _row_label(row)
        if label not in handles:
            (line,) = by_eps.plot([], [], ls=":", color=color)
            handles[label] = line
            labels.append(label)
    fig.legend(
        [handles[label] for label in labels],
        labels,
        loc="outside lower center",
        ncols=min(4, len(labels)),
        fontsize=8,
        frameon=False,
    )
    return fig


AUDIT_MARKERS = dict(
    zip(
        AUDIT_KINDS,
        (("o", "white-box ε̂"), ("s", "white-box ε̂, many runs"), ("^", "black-box ε̂")),
        strict=True,
    )
)


def _audits(run: dict) -> list[tuple[str, float, float, float | None]]:
    """(threat model, claimed ε, ε̂, most it could show) for each canary audit of a run."""
    found = []
    for kind in AUDIT_MARKERS:
        claimed = _path(run, "attacks", "audit", kind, "claimed_epsilon")
        bound = _path(run, "attacks", "audit", kind, "epsilon_lower_bound")
        if claimed is not None and bound is not None:
            power = _path(run, "attacks", "audit", kind, "max_demonstrable")
            found.append((kind, claimed, bound, power))
    return found


def audit_figure(rows: Sequence[Row]) -> Figure | None:
    """Claimed ε against the audits' ε̂, one point per run and threat model; the diagonal is the
    claim (a point above it contradicts the claim) and a faint tick marks the most each audit
    could have shown. None when no private run was audited."""
    points = [(row, audit) for row in rows for run in row.runs for audit in _audits(run)]
    if not points:
        return None
    fig, ax = _figure(5.6, 4.6)
    colors = dict(zip([r.label for r in rows], _colors(len(rows)), strict=True))
    top = max(max(claimed, bound) for _, (_, claimed, bound, _) in points)
    labelled: set[tuple[str, str]] = set()
    for row, (kind, claimed, bound, power) in points:
        marker, name = AUDIT_MARKERS[kind]
        key = (row.label, kind)
        ax.scatter(
            [claimed],
            [bound],
            marker=marker,
            s=40,
            color=colors[row.label],
            label=None if key in labelled else f"{_label(row.label, 28)} — {name}",
        )
        labelled.add(key)
        if power is not None and power <= 2 * top:
            ax.plot([claimed], [power], marker="_", ms=12, color=colors[row.label], alpha=0.4)
    ax.plot([0, top * 1.15], [0, top * 1.15], ls="--", lw=1, color="#999", label="ε̂ = claimed ε")
    ax.set(
        xlabel="claimed ε",
        ylabel="audited ε̂ (lower bound, 95%)",
        title="Claimed vs audited ε (above the diagonal: contradicted)",
        xlim=(0, top * 1.15),
        ylim=(0, None),
    )
    _style(ax)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    return fig
