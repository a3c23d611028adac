"""Figures for the HTML report, drawn from the `runs` of a results.json document.

Every function takes the list of run dicts and returns a matplotlib `Figure` built directly
(no pyplot state, Agg canvas), so reports can be made in threads and on machines without a
display or the ML stack. Nothing here writes files. Runs lacking the data a figure needs are
skipped for that figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medpriv.attacks.catalog import MIA_PANELS

__all__ = [
    "confusion_matrices",
    "has_confusion",
    "has_curve",
    "has_history",
    "number",
    "pr_curves",
    "roc_curves",
    "training_curves",
]

_GRID = {"color": "#d9dee5", "linewidth": 0.6}


def number(value: Any) -> float | None:
    """`value` as a finite float, or None (null, NaN, bools, strings and the like)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _label(text: Any, limit: int = 48) -> str:
    """A run name safe for matplotlib: shortened, no mathtext, never hidden from the legend."""
    text = str(text)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    text = text.replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _name(run: dict, index: int) -> str:
    return str(run.get("name") or f"run {index + 1}")


def _series(block: Any, *keys: str) -> tuple[np.ndarray, ...] | None:
    """Equal-length, finite float arrays for `keys` of a curve block, or None."""
    if not isinstance(block, dict):
        return None
    try:
        arrays = tuple(np.asarray(block[k], dtype=float).ravel() for k in keys)
    except (KeyError, TypeError, ValueError):
        return None
    if len({a.size for a in arrays}) != 1 or arrays[0].size < 2:
        return None
    if not all(np.isfinite(a).all() for a in arrays):
        return None
    return arrays


def _curve(run: dict, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    keys = {"roc": ("fpr", "tpr"), "pr": ("recall", "precision")}[kind]
    curves = run.get("curves")
    return _series(curves.get(kind) if isinstance(curves, dict) else None, *keys)


def has_curve(run: dict, kind: str) -> bool:
    """Whether `run` carries a usable ROC (`kind="roc"`) or PR (`kind="pr"`) curve."""
    return _curve(run, kind) is not None


def _history(run: dict) -> list[dict]:
    history = run.get("history")
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def has_history(run: dict) -> bool:
    """Whether `run` has at least one per-epoch record."""
    return bool(_history(run))


def _utility(run: dict) -> dict:
    utility = run.get("utility")
    return utility if isinstance(utility, dict) else {}


def _confusion(run: dict) -> np.ndarray | None:
    try:
        matrix = np.asarray(_utility(run).get("confusion_matrix"), dtype=float)
    except (TypeError, ValueError):
        return None
    if matrix.shape != (2, 2) or not np.isfinite(matrix).all():
        return None
    return matrix


def has_confusion(run: dict) -> bool:
    """Whether `run` has a usable 2×2 test confusion matrix."""
    return _confusion(run) is not None


def _colors(n: int) -> list[Any]:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _figure(width: float, height: float, **subplots: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _style(ax: Axes) -> None:
    ax.grid(True, **_GRID)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


_INSIDE = 7  # legends with more entries than this go below the axes


def _legend(ax: Axes, base_height: float) -> None:
    """Legend inside the axes when short; below them (figure grown to fit) when long."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) <= _INSIDE:
        ax.legend(fontsize=8, frameon=False, loc="best")
        return
    ncols = 2 if max(len(label) for label in labels) <= 38 else 1
    ax.legend(
        fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=ncols
    )
    fig = ax.get_figure()
    width, height = fig.get_size_inches()
    needed = base_height + 0.35 + 0.155 * math.ceil(len(handles) / ncols)
    fig.set_size_inches(width, max(height, needed))


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_curves(runs: Sequence[dict]) -> Figure:
    """ROC curve per run (AUROC in the legend) with the chance diagonal."""
    usable = [(i, r, c) for i, r in enumerate(runs) if (c := _curve(r, "roc")) is not None]
    fig, ax = _figure(5.6, 4.6)
    colors = _colors(len(runs))
    for i, run, (fpr, tpr) in usable:
        color = colors[i]
        auc = number(_utility(run).get("auroc"))
        auc = _trapezoid(fpr, tpr) if auc is None else auc
        ax.plot(fpr, tpr, color=color, lw=1.6, label=f"{_label(_name(run, i))} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title("ROC curves (test split)")
    _style(ax)
    _legend(ax, 4.6)
    if not usable:
        ax.text(0.5, 0.55, "no ROC curves recorded", ha="center", color="#666")
    return fig


def _positive_rate(run: dict) -> float | None:
    rate = number(_utility(run).get("positive_rate"))
    if rate is not None:
        return rate
    matrix = _confusion(run)
    if matrix is None or matrix.sum() <= 0:
        return None
    return float(matrix[1].sum() / matrix.sum())


def pr_curves(runs: Sequence[dict]) -> Figure:
    """Precision-recall curve per run (AUPRC in the legend) with the positive-rate baseline."""
    usable = [(i, r, c) for i, r in enumerate(runs) if (c := _curve(r, "pr")) is not None]
    fig, ax = _figure(5.6, 4.6)
    colors = _colors(len(runs))
    for i, run, (recall, precision) in usable:
        color = colors[i]
        ap = number(_utility(run).get("auprc"))
        label = _label(_name(run, i)) + ("" if ap is None else f" (AUPRC {ap:.3f})")
        ax.plot(recall, precision, color=color, lw=1.6, label=label)
    rates = sorted({round(r, 4) for _, run, _ in usable if (r := _positive_rate(run)) is not None})
    for k, rate in enumerate(rates):
        label = f"positive rate {rate:.3f}" if len(rates) == 1 else None
        if len(rates) > 1 and k == 0:
            label = f"positive rates {rates[0]:.3f}–{rates[-1]:.3f}"
        ax.axhline(rate, ls="--", color="#888", lw=1, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision")
    ax.set_title("Precision-recall curves (test split)")
    _style(ax)
    _legend(ax, 4.6)
    if not usable:
        ax.text(0.5, 0.55, "no precision-recall curves recorded", ha="center", color="#666")
    return fig


def confusion_matrices(runs: Sequence[dict]) -> Figure:
    """A grid of annotated 2×2 test confusion matrices ([[tn, fp], [fn, tp]]), one per run."""
    usable = [(i, r, m) for i, r in enumerate(runs) if (m := _confusion(r)) is not None]
    if not usable:
        fig, ax = _figure(4, 2)
        _empty(ax, "no confusion matrices recorded")
        return fig
    ncols = min(len(usable), 4)
    nrows = math.ceil(len(usable) / ncols)
    fig, axes = _figure(2.9 * ncols, 2.75 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    for ax, (i, run, matrix) in zip(axes.flat, usable, strict=False):
        total = matrix.sum()
        # Colour by share of the true class (row), so the minority class stays readable.
        rows = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), count in np.ndenumerate(matrix):
            pct = f"\n{count / total:.1%}" if total > 0 else ""
            ax.text(
                c,
                r,
                f"{count:,.0f}{pct}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if share[r, c] > 0.6 else "#1b2733",
            )
        ax.set_xticks([0, 1], ["pred 0", "pred 1"], fontsize=8)
        ax.set_yticks([0, 1], ["true 0", "true 1"], fontsize=8)
        threshold = number(_utility(run).get("threshold"))
        title = _label(_name(run, i))
        title = title if len(title) <= 34 else title[:33] + "…"
        ax.set_title(title, fontsize=9)
        if threshold is not None:
            ax.set_xlabel(f"threshold {threshold:g}", fontsize=7.5, color="#555")
    for ax in list(axes.flat)[len(usable) :]:
        ax.set_visible(False)
    return fig


def _epoch_series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for k, record in enumerate(history):
        value = number(record.get(key))
        if value is None:
            continue
        epoch = number(record.get("epoch"))
        xs.append(k + 1 if epoch is None else epoch)
        ys.append(value)
    return xs, ys


def training_curves(runs: Sequence[dict]) -> Figure:
    """Two panels: train (solid) / val (dashed) loss, and val AUROC, per epoch and run."""
    usable = [(i, r) for i, r in enumerate(runs) if has_history(r)]
    fig, (loss_ax, auc_ax) = _figure(10, 4.2, ncols=2)
    colors = _colors(len(runs))
    any_loss = any_auc = False
    for i, run in usable:
        color = colors[i]
        history, name = _history(run), _label(_name(run, i))
        labelled = False
        for key, style in (("train_loss", "-"), ("val_loss", "--")):
            xs, ys = _epoch_series(history, key)
            if xs:
                any_loss = True
                marker = "o" if len(xs) == 1 else None
                label = None if labelled else name
                loss_ax.plot(xs, ys, style, color=color, lw=1.4, marker=marker, label=label)
                labelled = True
        xs, ys = _epoch_series(history, "val_auroc")
        if xs:
            any_auc = True
            auc_ax.plot(
                xs, ys, color=color, lw=1.4, marker="o" if len(xs) == 1 else None, label=name
            )
    for ax, found, title, ylabel in (
        (loss_ax, any_loss, "Loss per epoch", "Cross-entropy loss"),
        (auc_ax, any_auc, "Validation AUROC per epoch", "AUROC"),
    ):
        if not found:
            _empty(ax, "not recorded")
            ax.set_title(title)
            continue
        ax.set(title=title, xlabel="Epoch", ylabel=ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style(ax)
        if ax is loss_ax:  # line styles, explained once
            ax.plot([], [], "-", color="#555", lw=1.4, label="train")
            ax.plot([], [], "--", color="#555", lw=1.4, label="validation")
        _legend(ax, 4.2)
    return fig


def epsilon_curves(runs: Sequence[dict]) -> Figure | None:
    """ε spent after each epoch, one line per private run; None when no run recorded ε."""
    usable = [
        (i, r)
        for i, r in enumerate(runs)
        if has_history(r) and _epoch_series(_history(r), "epsilon")[0]
    ]
    if not usable:
        return None
    fig, ax = _figure(5.2, 4.2)
    colors = _colors(len(runs))
    for i, run in usable:
        xs, ys = _epoch_series(_history(run), "epsilon")
        ax.plot(
            xs,
            ys,
            color=colors[i],
            lw=1.4,
            marker="o" if len(xs) == 1 else None,
            label=_label(_name(run, i)),
        )
    ax.set(title="Privacy spent per epoch", xlabel="Epoch", ylabel="ε (per privacy unit)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _style(ax)
    _legend(ax, 4.2)
    return fig


def _attack_roc(run: dict, attack: str) -> tuple[np.ndarray, np.ndarray] | None:
    block = run.get("attacks", {}).get(attack) if isinstance(run.get("attacks"), dict) else None
    if not isinstance(block, dict):
        return None
    return _series(block.get("roc"), "fpr", "tpr")


def has_attack_roc(run: dict) -> bool:
    return any(_attack_roc(run, attack) is not None for attack, _ in MIA_PANELS)


def attack_roc_curves(runs: Sequence[dict]) -> Figure | None:
    """Membership-inference ROC per attack (one panel each), log-log, as Carlini et al. plot it."""
    panels = [(a, t) for a, t in MIA_PANELS if any(_attack_roc(r, a) is not None for r in runs)]
    if not panels:
        return None
    fig, axes = _figure(4.2 * len(panels), 4.4, ncols=len(panels), squeeze=False)
    colors = _colors(len(runs))
    floor = 1e-4
    for ax, (attack, title) in zip(axes[0], panels, strict=True):
        for i, run in enumerate(runs):
            curve = _attack_roc(run, attack)
            if curve is None:
                continue
            fpr, tpr = curve
            auc = number(run["attacks"][attack].get("auc"))
            label = _label(_name(run, i), 28) + (f" ({auc:.2f})" if auc is not None else "")
            ax.plot(
                np.maximum(fpr, floor), np.maximum(tpr, floor), color=colors[i], lw=1.5, label=label
            )
        grid = np.geomspace(floor, 1, 50)
        ax.plot(grid, grid, ls="--", color="#888", lw=1, label="chance")
        ax.set(
            xscale="log",
            yscale="log",
            xlim=(floor, 1),
            ylim=(floor, 1.05),
            xlabel="False positive rate",
            ylabel="True positive rate",
        )
        ax.set_title(f"{title} (AUC in legend)")
        _style(ax)
        _legend(ax, 4.4)
    return fig


def _inversion(run: dict) -> dict | None:
    attacks = run.get("attacks")
    block = attacks.get("fl_inversion") if isinstance(attacks, dict) else None
    return block if isinstance(block, dict) else None


def has_inversion(run: dict) -> bool:
    return _inversion(run) is not None


def inversion_accuracy(runs: Sequence[dict]) -> Figure | None:
    """Gradient inversion: reconstruction accuracy against the client's batch size (FedSGD,
    FedAvg), with the DP and SecAgg settings as markers and the distribution baseline dashed."""
    usable = [(i, r, _inversion(r)) for i, r in enumerate(runs) if has_inversion(r)]
    if not usable:
        return None
    fig, ax = _figure(6.4, 4.2)
    colors = _colors(len(runs))
    baselines = []
    for i, run, block in usable:
        for view, style in (("fedsgd", "-o"), ("fedavg", "--s")):
            entries = block.get(view) or {}
            sizes = sorted(int(k) for k, v in entries.items() if isinstance(v, dict))
            ys = [number(entries[str(b)].get("accuracy")) for b in sizes]
            if sizes:
                ax.plot(
                    sizes,
                    ys,
                    style,
                    color=colors[i],
                    lw=1.5,
                    ms=4,
                    label=f"{_label(_name(run, i), 24)} {view}",
                )
            baselines += [number(entries[str(b)].get("baseline_accuracy")) for b in sizes]
        for view, marker in (("dp", "v"), ("secagg", "D")):
            entries = block.get(view) or {}
            for key, value in entries.items():
                if isinstance(value, dict) and number(value.get("accuracy")) is not None:
                    ax.plot(
                        [int(key)],
                        [number(value["accuracy"])],
                        marker,
                        color=colors[i],
                        ms=8,
                        mfc="none",
                        label=f"{_label(_name(run, i), 24)} {view}",
                    )
    values = [b for b in baselines if b is not None]
    if values:
        ax.axhline(
            float(np.mean(values)), ls="--", color="#888", lw=1, label="distribution baseline"
        )
    ax.set(
        xscale="log",
        xlabel="Records in the client's update (batch size)",
        ylabel="Features reconstructed correctly",
        ylim=(0, 1.02),
    )
    ax.set_xticks([1, 4, 8, 16, 32], labels=["1", "4", "8", "16", "32"])
    ax.set_title("Gradient inversion of client updates")
    _style(ax)
    _legend(ax, 4.2)
    return fig


def _split_blocks(run: dict) -> tuple[dict | None, dict | None]:
    attacks = run.get("attacks") if isinstance(run.get("attacks"), dict) else {}
    labels, recon = attacks.get("sl_label_leakage"), attacks.get("sl_reconstruction")
    return (
        labels if isinstance(labels, dict) else None,
        recon if isinstance(recon, dict) else None,
    )


def has_split_leakage(run: dict) -> bool:
    return any(block is not None for block in _split_blocks(run))


def split_leakage(runs: Sequence[dict]) -> Figure | None:
    """What a split-learning server learns: label-leakage AUCs (norm and cosine attacks) and
    the share of input features reconstructed from activations, against guessing. A panel is
    drawn only for an attack that was run."""
    labelled = [(i, r) for i, r in enumerate(runs) if _split_blocks(r)[0] is not None]
    rebuilt = [(i, r) for i, r in enumerate(runs) if _split_blocks(r)[1] is not None]
    panels = [p for p in (labelled and "labels", rebuilt and "inputs") if p]
    if not panels:
        return None
    fig, axes = _figure(4.8 * len(panels), 4.0, ncols=len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "labels":
            _label_leakage_panel(ax, labelled)
        else:
            _reconstruction_panel(ax, rebuilt)
        _style(ax)
        ax.legend(
            fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncols=3
        )
    return fig


def _label_leakage_panel(ax: Axes, usable: list[tuple[int, dict]]) -> None:
    ticks, width = np.arange(len(usable)), 0.38
    for offset, key, color in (
        (-width / 2, "norm_auc", "#4c72b0"),
        (width / 2, "cosine_auc", "#dd8452"),
    ):
        values = [number((_split_blocks(r)[0] or {}).get(key)) for _, r in usable]
        ax.bar(
            ticks + offset,
            [v if v is not None else 0.0 for v in values],
            width,
            color=color,
            label=key.replace("_auc", " attack"),
        )
    ax.axhline(0.5, ls="--", color="#888", lw=1, label="chance")
    ax.set(ylim=(0, 1.02), ylabel="AUC of the inferred labels", title="Label leakage (U-shaped)")
    ax.set_xticks(ticks, labels=[_label(_name(r, i), 22) for i, r in usable], rotation=15)


def _reconstruction_panel(ax: Axes, usable: list[tuple[int, dict]]) -> None:
    ticks = np.arange(len(usable))
    accuracy = [number((_split_blocks(r)[1] or {}).get("accuracy")) for _, r in usable]
    baseline = [number((_split_blocks(r)[1] or {}).get("baseline_accuracy")) for _, r in usable]
    ax.bar(
        ticks,
        [a if a is not None else 0.0 for a in accuracy],
        0.6,
        color="#55a868",
        label="reconstructed",
    )
    ax.plot(
        ticks,
        [b if b is not None else np.nan for b in baseline],
        "_",
        color="#333",
        ms=28,
        mew=2,
        label="distribution baseline",
    )
    ax.set(
        ylim=(0, 1.02), ylabel="Features reconstructed correctly", title="Inputs from activations"
    )
    ax.set_xticks(ticks, labels=[_label(_name(r, i), 22) for i, r in usable], rotation=15)


def _calibration(run: dict) -> tuple[np.ndarray, np.ndarray] | None:
    curves = run.get("curves")
    block = curves.get("calibration") if isinstance(curves, dict) else None
    return _series(block, "predicted", "observed")


def has_calibration(run: dict) -> bool:
    """Whether `run` carries a reliability curve."""
    return _calibration(run) is not None


def calibration_curves(runs: Sequence[dict]) -> Figure:
    """Observed outcome rate against mean predicted risk (equal-count bins of the test split)."""
    fig, ax = _figure(5.2, 4.2)
    colors = _colors(len(runs))
    top = 0.0
    for i, run in enumerate(runs):
        series = _calibration(run)
        if series is None:
            continue
        predicted, observed = series
        top = max(top, float(predicted.max()), float(observed.max()))
        ax.plot(
            predicted, observed, "o-", ms=3, lw=1.3, color=colors[i], label=_label(_name(run, i))
        )
    limit = min(1.0, max(0.05, top * 1.1))
    ax.plot([0, limit], [0, limit], ls="--", lw=1, color="#999")
    ax.set(
        xlim=(0, limit),
        ylim=(0, limit),
        xlabel="Mean predicted risk",
        ylabel="Observed outcome rate",
        title="Calibration (test split)",
    )
    _style(ax)
    _legend(ax, 4.2)
    return fig


def _rounds(run: dict) -> list[dict]:
    """Per-round records of a federated run (they carry `round` and `clients`)."""
    return [h for h in _history(run) if "round" in h and "clients" in h]


def has_rounds(run: dict) -> bool:
    """Whether `run` is federated and kept its per-round history."""
    return bool(_rounds(run))


def federated_rounds(runs: Sequence[dict]) -> Figure | None:
    """Per round: global validation AUROC, clients' mean training loss (band: min–max) and the
    cumulative bytes communicated; rounds with a dropped client are marked ×."""
    usable = [(i, r) for i, r in enumerate(runs) if has_rounds(r)]
    if not usable:
        return None
    fig, (auc_ax, loss_ax, bytes_ax) = _figure(12.0, 3.9, ncols=3)
    colors = _colors(len(runs))
    for i, run in usable:
        records = _rounds(run)
        xs = np.array([number(h.get("round")) or k + 1 for k, h in enumerate(records)], float)
        label = _label(_name(run, i))
        auc = np.array([number(h.get("val_auroc")) or np.nan for h in records], float)
        auc_ax.plot(xs, auc, lw=1.4, color=colors[i], label=label)
        losses = [
            [v for v in (h.get("client_train_loss") or {}).values() if number(v) is not None]
            for h in records
        ]
        mean = np.array([np.mean(v) if v else np.nan for v in losses])
        low = np.array([min(v) if v else np.nan for v in losses])
        high = np.array([max(v) if v else np.nan for v in losses])
        loss_ax.plot(xs, mean, lw=1.4, color=colors[i])
        loss_ax.fill_between(xs, low, high, color=colors[i], alpha=0.12, lw=0)
        sent = np.cumsum(
            [(number(h.get("bytes_up")) or 0) + (number(h.get("bytes_down")) or 0) for h in records]
        )
        bytes_ax.plot(xs, sent / 1e6, lw=1.4, color=colors[i])
        dropped = [k for k, h in enumerate(records) if h.get("dropped")]
        if dropped:
            auc_ax.plot(xs[dropped], auc[dropped], "x", ms=7, color=colors[i])
    auc_ax.set(title="Global model", xlabel="Round", ylabel="Validation AUROC")
    loss_ax.set(title="Clients' training loss", xlabel="Round", ylabel="Loss (mean, min–max)")
    bytes_ax.set(title="Communication", xlabel="Round", ylabel="Cumulative MB (both ways)")
    for ax in (auc_ax, loss_ax, bytes_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style(ax)
    _legend(auc_ax, 3.9)
    return fig
