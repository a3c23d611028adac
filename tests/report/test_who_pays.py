"""The report's "who pays" section: per-group AUROC, the private model's gap to its counterpart
seed by seed, exposure, suppressed groups shown as such."""

from __future__ import annotations

from medpriv.report import summary, who_pays
from medpriv.report.html import render_report
from medpriv.report.markdown import render_markdown


def _run(method: str, seed: int, eps: float | None, aurocs: dict[str, float | None]) -> dict:
    groups = [
        {"group": g, "suppressed": True}
        if a is None
        else {
            "group": g,
            "units": 120,
            "auroc": a,
            "calibration_gap": 0.01,
            "membership": {"auc": 0.55, "tpr_at_fpr": {"0.01": 0.03, "0.1": 0.2}},
        }
        for g, a in aurocs.items()
    ]
    return {
        "name": f"{method} seed={seed}" if eps is None else f"{method} eps={eps:g} seed={seed}",
        "method": method,
        "seed": seed,
        "privacy": {"epsilon": eps},
        "utility": {"auroc": sum(a for a in aurocs.values() if a) / 2},
        "subgroups": {
            "min_units": 50,
            "unit": "patient",
            "membership_attack": "mia_lira",
            "attributes": [{"attribute": "sex", "source": "sensitive column", "groups": groups}],
        },
    }


RUNS = [
    _run("baseline", 0, None, {"F": 0.80, "M": 0.84, "X": None}),
    _run("dp-sgd", 0, 1.0, {"F": 0.70, "M": 0.83, "X": None}),
    _run("baseline", 1, None, {"F": 0.82, "M": 0.86, "X": None}),
    _run("dp-sgd", 1, 1.0, {"F": 0.78, "M": 0.84, "X": None}),
]


def test_gaps_are_paired_seed_by_seed_and_the_largest_is_named():
    rows = summary.headline(RUNS)
    (table,) = who_pays.attribute_tables(rows)
    assert table.groups == ("F", "M", "X")
    dp = table.cells["dp-sgd eps=1"]
    assert abs(dp["F"].gap.mean - (0.10 + 0.04) / 2) < 1e-9
    assert abs(dp["M"].gap.mean - 0.015) < 1e-9
    assert dp["X"].suppressed and who_pays.utility_text(dp["X"]) == "suppressed"
    assert table.cells["baseline"]["F"].gap.mean is None  # not private: no gap
    assert who_pays.utility_text(dp["F"]) == "0.740 (gap +0.070)"
    assert who_pays.exposure_text(dp["M"]) == "3.0%"
    (sentence,) = who_pays.largest_gaps(rows, [table])
    assert sentence.startswith("dp-sgd eps=1: largest AUROC loss in sex = F (+0.070")


def test_the_section_renders_in_both_reports_and_only_with_subgroups():
    html, markdown = render_report({"runs": RUNS}), render_markdown({"runs": RUNS})
    assert 'id="who-pays"' in html and "0.740 (gap +0.070)" in html
    assert "## Who pays — subgroups" in markdown and "| X | — | suppressed |" in markdown
    assert "fewer than 50 patients are suppressed" in markdown
    bare = [{k: v for k, v in run.items() if k != "subgroups"} for run in RUNS]
    assert 'id="who-pays"' not in render_report({"runs": bare})
    assert "Who pays" not in render_markdown({"runs": bare})
