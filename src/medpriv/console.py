"""Terminal output: progress bars while running, the cohort flow, and the summary table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medpriv.data.dataset import TabularDataset

PIPED_WIDTH = 150  # rich would wrap tables at 80 columns when output is not a terminal (logs, CI)
# Said wherever the dataset card's counts are shown (the report says the same).
CARD_UNPROTECTED = (
    "These exact counts are computed from every record without noise: no model's ε covers them."
)


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH)


def print_cohort(dataset: TabularDataset) -> None:
    """The cohort flow (rules and counts) and dataset notes — aggregates only, never rows."""
    console = _console(stderr=True)
    table = Table(title=f"cohort: {dataset.name}", show_edge=False)
    table.add_column("step")
    table.add_column("excluded", justify="right")
    table.add_column("remaining", justify="right")
    for step in dataset.cohort_flow:
        table.add_row(step.rule, f"{step.excluded:,}", f"{step.remaining:,}")
    console.print(table)
    console.print(
        f"{len(dataset):,} records, {dataset.n_units:,} {dataset.unit_name} units, "
        f"{len(dataset.schema.columns)} features, label '{dataset.label_name}' "
        f"positive rate {dataset.positive_rate:.3f}, {dataset.n_sites} sites"
    )
    for note in dataset.notes:
        console.print(f"  note: {note}", style="yellow" if note.startswith("WARNING") else None)
    console.print(f"  {CARD_UNPROTECTED}", style="dim")


class ConsoleListener:
    """Receives experiment events and draws progress bars on stderr."""

    def __init__(self, *, progress: bool = True) -> None:
        self.enabled = progress
        self.paths: Any = None
        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=_console(stderr=True),
            disable=not progress,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ConsoleListener:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:  # leave only the error line on screen
            for task in list(self._progress.task_ids):
                self._progress.remove_task(task)
        self._progress.stop()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "cleaned":  # temp files a killed run left behind
            self._progress.console.print(info["text"], style="yellow")
        elif event == "loading":
            self._tasks["loading"] = self._progress.add_task(
                "loading data", total=None, info=info["spec"]
            )
        elif event == "dataset":
            if "loading" in self._tasks:
                self._progress.update(self._tasks["loading"], total=1, completed=1)
            print_cohort(info["dataset"])
        elif event == "run_start":
            self._tasks[info["name"]] = self._progress.add_task(
                info["name"], total=info["epochs"], info=""
            )
        elif event == "epoch":
            record = info["record"]
            text = f"epoch {info['epoch']}"
            if "val_auroc" in record:
                text += f"  val AUROC {record['val_auroc']:.3f}"
            self._progress.update(self._tasks[info["name"]], completed=info["epoch"], info=text)
        elif event == "attack":
            self._progress.update(self._tasks[info["name"]], info=info["text"])
        elif event == "run_end":
            task = self._tasks[info["name"]]
            utility = info["entry"]["utility"]
            self._progress.update(
                task,
                completed=self._progress.tasks[task].total,
                info=f"test AUROC {utility['auroc']:.3f}",
            )
        elif event == "run_skipped":
            self._progress.add_task(info["name"], total=1, completed=1, info="finished earlier")
        elif event == "interrupted":
            self.paths = info["paths"]
            self._progress.console.print(
                f"interrupted: {info['done']} of {info['of']} runs finished and saved in "
                f"{info['paths'].results}; continue with: medpriv run --resume "
                f"{info['paths'].root}",
                style="yellow",
            )
        elif event == "done":
            self.paths = info["paths"]


def print_summary(document: dict[str, Any], paths: Any = None) -> None:
    """The report's headline on the terminal: one row per method and ε (mean ± SD over seeds;
    ε the largest over seeds), and a red line for every model without a guarantee."""
    from medpriv.report import summary

    stdout = _console(stderr=False)
    rows = summary.headline(document["runs"])
    seeds = max((len(r.runs) for r in rows), default=1)
    title = f"medpriv results — {document['dataset']['name']}"
    spread = f" (mean ± SD over {seeds} seeds; ε: the largest over seeds)" if seeds > 1 else ""
    table = Table(title=title + spread)
    columns = summary.visible_columns(rows)
    table.add_column("method")
    for column in columns:
        # the AUROC's CI goes on its own line and is never cut short
        width = 13 if column.key == "auroc" else None
        table.add_column(column.title, justify="right", min_width=width)
    for row in rows:
        table.add_row(
            row.label,
            *(summary.cell_text(row, c, none="not private", ci_sep="\n", pm="±") for c in columns),
        )
    stdout.print(table)
    for note in summary.no_guarantee_notes(rows):
        _console(stderr=True).print(f"NO PRIVACY GUARANTEE: {note}", style="bold red")
    for run in document["runs"]:
        audit = (run.get("attacks") or {}).get("audit") or {}
        if audit.get("consistent") is False:
            _console(stderr=True).print(
                f"WARNING: {run['name']}: {summary.audit_verdict(run)} The DP implementation or "
                "its accounting is wrong.",
                style="bold red",
            )
    if paths is not None:
        stdout.print(f"results: {paths.results}\nreport:  {paths.report} (and report.md)")
