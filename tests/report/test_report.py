"""The HTML report: real content from a realistic results document, escaping, atomic writes."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from medpriv.report import plots
from medpriv.report.html import render_report, write_report

IMG = "data:image/png;base64,"
ALERT = '<div class="alert alert-danger"'


def _run(name: str, method: str, seed: int, auroc: float, *, history: bool = True) -> dict:
    return {
        "name": name,
        "method": method,
        "seed": seed,
        "params": {"hidden": [128, 64]},
        "utility": {
            "auroc": auroc,
            "auroc_ci95": [auroc - 0.021, auroc + 0.019],
            "auprc": 0.45,
            "accuracy": 0.9,
            "balanced_accuracy": 0.7,
            "f1": 0.4,
            "brier": 0.08,
            "confusion_matrix": [[1500, 20], [150, 40]],
            "threshold": 0.5,
            "val_threshold": 0.18,
            "confusion_matrix_at_val_threshold": [[1300, 220], [60, 130]],
            "n_test": 1710,
        },
        "privacy": {
            "epsilon": None,
            "delta": None,
            "accountant": None,
            "sampling": "shuffle",
            "unit": "patient",
            "level": None,
            "clipping_norm": None,
            "statement": "Not differentially private.",
        },
        "attacks": {},
        "cost": {"train_seconds": 3.2, "bytes_communicated": 0},
        "history": [
            {"epoch": e, "train_loss": 0.5 / e, "val_loss": 0.4 / e, "val_auroc": 0.7 + 0.03 * e}
            for e in range(1, 5)
        ]
        if history
        else [],
        "curves": {
            "roc": {"fpr": [0.0, 0.1, 0.4, 1.0], "tpr": [0.0, 0.5, 0.85, 1.0]},
            "pr": {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.6, 0.11]},
        },
    }


def _results(*, consistent: bool = False) -> dict:
    private = _run("dp_sgd seed=0", "dp_sgd", 0, 0.812, history=False)
    private["privacy"] = {
        "epsilon": 1.0,
        "delta": 1e-5,
        "accountant": "prv",
        "sampling": "poisson",
        "unit": "patient",
        "level": "sample",
        "clipping_norm": 1.0,
        "statement": "(1, δ = 1e-05)-differential privacy at the sample level, unit = patient.",
    }
    private["attacks"] = {
        "mia_loss": {"auc": 0.523, "tpr_at_fpr": {"0.001": 0.0, "0.01": 0.012}, "advantage": 0.031},
        "audit": {"epsilon_lower_bound": 2.4, "confidence": 0.95, "consistent": consistent},
    }
    return {
        "medpriv_version": "0.1.0",
        "created": "2026-11-23T05:30:00+00:00",
        "config": {"data": {"spec": "synthetic"}, "run": {"methods": ["baseline"], "seeds": 1}},
        "dataset": {
            "name": "synthetic",
            "n_records": 8500,
            "n_units": 8500,
            "n_features": 96,
            "positive_rate": 0.115,
            "n_sites": 5,
            "unit": "patient",
            "label": "in-hospital death",
            "cohort_flow": [
                {"rule": "ICU stays seen", "excluded": 0, "remaining": 10000},
                {"rule": "not the patient's first ICU stay", "excluded": 1200, "remaining": 8800},
            ],
            "notes": ["ages over 89 top-coded at 90"],
        },
        "runs": [
            _run("baseline seed=0", "baseline", 0, 0.861),
            _run("logreg <script>alert(1)</script>", "logreg", 0, 0.843),
            private,
        ],
    }


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(_results())


def test_page_shows_dataset_runs_and_metrics(page: str):
    assert page.startswith("<!DOCTYPE html>")
    assert "medpriv report — synthetic" in page
    assert "medpriv 0.1.0" in page and "2026-11-23T05:30:00+00:00" in page
    for text in ("8,500", "96", "11.5%", "in-hospital death", "ages over 89 top-coded at 90"):
        assert text in page
    # cohort flow rows, with the apostrophe escaped
    assert re.search(r"<td>ICU stays seen</td><td[^>]*>0</td><td[^>]*>10,000</td>", page)
    assert re.search(
        r"<td>not the patient&#x27;s first ICU stay</td><td[^>]*>1,200</td><td[^>]*>8,800</td>",
        page,
    )
    assert "baseline seed=0" in page and "dp_sgd seed=0" in page
    assert "0.861 (0.840–0.880)" in page  # AUROC with its bootstrap CI
    assert "0.812 (0.791–0.831)" in page
    assert "0.0800" in page  # Brier


def test_privacy_columns_and_statements(page: str):
    runs_table = page.split('<section id="runs">')[1].split("</table>")[0]
    rows = runs_table.split("<tr>")[2:]
    assert len(rows) == 3
    assert all("not private" in row for row in rows[:2])
    assert "not private" not in rows[2] and ">1<" in rows[2] and "1e-05" in rows[2]
    privacy = page.split('<section id="privacy">')[1].split("</section>")[0]
    assert "ε = 1" in privacy and "differential privacy at the sample level" in privacy


def test_attacks_table_and_audit_warning(page: str):
    attacks = page.split('<section id="attacks">')[1].split("</section>")[0]
    for text in (
        "loss threshold",
        "ε audit",
        "AUC",
        "advantage",
        "ε lower bound",
        "TPR @ FPR 0.01",
    ):
        assert text in attacks
    assert "0.523" in attacks and "0.031" in attacks and "2.400" in attacks
    assert page.count(ALERT) == 1 and "bounds ε below by 2.40" in page and "CONTRADICTS" in page
    assert "audit failed" in page.split('<section id="privacy">')[1].split("</section>")[0]
    assert ALERT not in render_report(_results(consistent=True))


def test_one_embedded_image_per_expected_figure(page: str):
    # ROC, PR, privacy-utility frontier, confusion matrices, training curves
    assert page.count(IMG) == 5
    no_private = _results()
    no_private["runs"] = no_private["runs"][:2]
    for run in no_private["runs"]:
        del run["curves"]
    assert render_report(no_private).count(IMG) == 2  # confusion matrices, training curves


def test_strings_are_escaped(page: str):
    assert "<script>" not in page
    assert "logreg &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page  # no external resources


def test_empty_and_partial_documents_render():
    empty = render_report({"medpriv_version": "0.1.0", "dataset": {"name": "x"}, "runs": []})
    assert "No runs" in empty and IMG not in empty
    assert "No runs" in render_report({})
    partial = {"runs": [{"name": "old", "utility": {"auroc": 0.7}, "privacy": {"epsilon": 3}}]}
    html = render_report(partial)
    assert "old" in html and "0.700" in html and html.count(IMG) == 1  # the frontier only


def test_write_report_is_atomic(tmp_path: Path):
    target = tmp_path / "out" / "report.html"
    document = _results()
    document["runs"] = document["runs"][:1]
    assert write_report(document, target) == target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


@pytest.mark.parametrize(
    "draw",
    [
        plots.roc_curves,
        plots.pr_curves,
        plots.confusion_matrices,
        plots.training_curves,
    ],
)
def test_plot_functions_return_figures(draw):
    runs = copy.deepcopy(_results()["runs"])
    fig = draw(runs)
    assert isinstance(fig, Figure) and fig.axes
    plt.close(fig)
    empty = draw([])
    assert isinstance(empty, Figure)
    plt.close(empty)


def test_report_imports_no_ml_stack():
    code = (
        "import sys, medpriv.report.html; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn', 'opacus', "
        "'flwr', 'scipy') or (m.startswith('medpriv.') and not m.startswith('medpriv.report') "
        "and m not in ('medpriv.attacks', 'medpriv.attacks.catalog'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_epsilon_curves_only_for_runs_that_recorded_epsilon():
    from medpriv.report import plots

    private = {
        "name": "dp",
        "history": [{"epoch": 1, "epsilon": 0.3}, {"epoch": 2, "epsilon": 0.5}],
    }
    public = {"name": "base", "history": [{"epoch": 1, "val_auroc": 0.8}]}
    assert plots.epsilon_curves([public]) is None
    fig = plots.epsilon_curves([public, private])
    assert fig is not None and fig.axes[0].get_lines()[0].get_ydata().tolist() == [0.3, 0.5]


def test_split_learning_leakage_figure_appears_only_for_split_runs():
    document = _results()
    assert plots.split_leakage(document["runs"]) is None
    before = render_report(document).count(IMG)
    document["runs"][0]["attacks"]["sl_label_leakage"] = {
        "auc": 1.0,
        "norm_auc": 0.93,
        "cosine_auc": 1.0,
    }
    document["runs"][0]["attacks"]["sl_reconstruction"] = {
        "accuracy": 0.83,
        "baseline_accuracy": 0.58,
    }
    fig = plots.split_leakage(document["runs"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    plt.close(fig)
    labels_only = copy.deepcopy(document)
    del labels_only["runs"][0]["attacks"]["sl_reconstruction"]
    fig = plots.split_leakage(labels_only["runs"])  # no empty panel for an attack not run
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "Label leakage (U-shaped)"
    plt.close(fig)
    page = render_report(document)
    assert page.count(IMG) == before + 1 and "Split-learning leakage" in page


def _seeded_results() -> dict:
    """Two seeds of baseline and of a private method, with attack results and a budget caveat."""
    document = _results(consistent=True)
    runs = []
    for seed in (0, 1):
        base = _run(f"baseline seed={seed}", "baseline", seed, 0.86 + 0.01 * seed)
        base["attacks"] = {
            "mia_loss": {"auc": 0.53, "tpr_at_fpr": {"0.001": 0.0}},
            "mia_lira": {"auc": 0.56, "tpr_at_fpr": {"0.001": 0.004 + 0.002 * seed}},
        }
        dp = copy.deepcopy(document["runs"][2])
        dp["name"], dp["method"], dp["seed"] = f"dp-sgd eps=1 seed={seed}", "dp-sgd", seed
        dp["utility"]["auroc"] = 0.80 + 0.02 * seed
        dp["attacks"]["mia_lira"] = {"auc": 0.5, "tpr_at_fpr": {"0.001": 0.001}}
        dp["privacy"]["caveats"] = [
            "ε = 1.2 is over the budget of 1 (allowed by --allow-over-budget)"
        ]
        runs += [base, dp]
    document["runs"] = runs
    document["complete"] = False
    document["dataset"]["notes"] = ["37 exact duplicate rows dropped", "ages top-coded"]
    return document


def test_headline_rows_average_seeds_and_mark_the_best():
    from medpriv.report import summary

    rows = summary.headline(_seeded_results()["runs"])
    assert [r.label for r in rows] == ["baseline", "dp-sgd eps=1"]
    base, dp = rows
    assert base.stats["auroc"].mean == pytest.approx(0.865)
    assert base.stats["auroc"].sd == pytest.approx(0.00707, abs=1e-5)
    assert dp.stats["epsilon"].mean == 1.0 and not base.private and dp.private
    best = summary.best_rows(rows)
    assert best["auroc"] == {0} and best["lira_tpr"] == {1} and best["mia_auc"] == {1}
    assert summary.format_stat(base.stats["auroc"]) == "0.865 ± 0.007"


def test_headline_section_warnings_and_plain_statements():
    page = render_report(_seeded_results())
    headline = page.split('<section id="headline">')[1].split("</section>")[0]
    assert "0.865 ± 0.007" in headline and "mean ± SD over 2 seeds" in headline
    assert "LiRA TPR @ 0.1% FPR" in headline and '<span class="tag">none</span>' in headline
    assert re.search(r'<td class="num best">0\.865 ± 0\.007</td>', headline)
    warnings = page.split('<section id="warnings">')[1].split("</section>")[0]
    assert "interrupted" in warnings and "duplicate rows dropped" in warnings
    assert "over the budget" in warnings and "ages top-coded" not in warnings
    privacy = page.split('<section id="privacy">')[1].split("</section>")[0]
    assert "Protects each patient" in privacy and "e^ε = 2.72" in privacy
    assert "δ = 1e-05" in privacy and "Nothing is formally protected" in privacy
    assert page.index('id="headline"') < page.index('id="frontier"') < page.index('id="dataset"')


def test_frontier_has_both_panels_and_skips_when_nothing_to_plot():
    from medpriv.report import summary
    from medpriv.report.frontier import frontier

    fig = frontier(summary.headline(_seeded_results()["runs"]))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_xlabel().startswith("ε") and "LiRA" in fig.axes[1].get_xlabel()
    plt.close(fig)
    public = [r for r in _results()["runs"] if r["privacy"]["epsilon"] is None]
    assert frontier(summary.headline(public)) is None


def test_markdown_companion_carries_the_same_numbers():
    from medpriv.report.markdown import render_markdown

    text = render_markdown(_seeded_results())
    assert "| baseline | none | **0.865 ± 0.007** |" in text
    assert "## Warnings" in text and "## Privacy statements" in text
    assert "| ICU stays seen | 0 | 10,000 |" in text


def test_report_is_deterministic_and_cli_regenerates_it(tmp_path: Path):
    from typer.testing import CliRunner

    from medpriv.cli import app
    from medpriv.report.files import write_reports

    document = _seeded_results()
    for run in document["runs"]:
        run["curves"]["calibration"] = {
            "predicted": [0.02, 0.1, 0.4],
            "observed": [0.03, 0.09, 0.35],
            "count": [50, 50, 50],
        }
    first_html, first_md = write_reports(document, tmp_path)
    html, md = first_html.read_text(), first_md.read_text()
    assert "Calibration" in html
    (tmp_path / "results.json").write_text(json.dumps(document))
    first_html.unlink()
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert first_html.read_text() == html and first_md.read_text() == md
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no results.json" in missing.output
    (tmp_path / "results.json").write_text("[1, 2]")
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a medpriv results file" in bad.output


def test_canary_audits_show_per_threat_model_with_power_and_a_claimed_vs_audited_figure():
    results = _results(consistent=True)
    white = {
        "epsilon_lower_bound": 0.62,
        "max_demonstrable": 4.47,
        "power": 4.47,
        "claimed_epsilon": 1.0,
        "verdict": "tight",
        "consistent": True,
        "confidence": 0.95,
        "canaries": 432,
    }
    black = {**white, "epsilon_lower_bound": 0.0, "max_demonstrable": 3.66, "power": 3.66}
    black["verdict"] = "not contradicted"
    results["runs"][-1]["attacks"]["audit"] = {
        **{k: white[k] for k in ("epsilon_lower_bound", "confidence", "consistent", "verdict")},
        "power": 4.47,
        "deciding": "white_box",
        "white_box": white,
        "black_box": black,
    }
    page = render_report(results)
    attacks = page.split('<section id="attacks">')[1].split("</section>")[0]
    assert "Canary audit — white-box" in attacks and "Canary audit — black-box" in attacks
    assert "could show at most" in attacks and "4.470" in attacks and "3.660" in attacks
    headline = page.split('<section id="headline">')[1].split("</section>")[0]
    assert "Audit ε̂ (white-box)" in headline and "can show ≤ 4.47" in headline
    assert "Worst-case patient ε̂ (black-box)" in headline
    assert page.count(IMG) == 6  # the five figures and claimed against audited ε
    assert "above the diagonal contradicts its claim" in page
