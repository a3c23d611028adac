"""What the reports say about privacy, from small hand-written results documents: the headline ε
is the largest over seeds, report.md carries every caveat (and what is public, trusted and
unprotected) of every model, a model with replayable noise is flagged as carrying no guarantee,
an audit is never said to confirm a claim, and the dataset card's counts are said to be
unprotected."""

from __future__ import annotations

import copy
import re

import pytest

from medpriv.privacy.statement import PrivacySpent
from medpriv.report import summary
from medpriv.report.html import render_report
from medpriv.report.markdown import render_markdown


def _run(name: str, seed: int, privacy: PrivacySpent | dict, **attacks) -> dict:
    return {
        "name": f"{name} seed={seed}",
        "method": name.split()[0],
        "seed": seed,
        "utility": {"auroc": 0.8 + 0.01 * seed, "accuracy": 0.9},
        "privacy": privacy.to_dict() if isinstance(privacy, PrivacySpent) else privacy,
        "attacks": attacks,
        "cost": {"train_seconds": 1.0},
    }


def _dp(epsilon: float, seed: int, **fields) -> PrivacySpent:
    return PrivacySpent(
        epsilon=epsilon,
        delta=1e-5,
        accountant="prv",
        sampling="poisson",
        unit="patient",
        level="sample",
        clipping_norm=1.0,
        noise_multiplier=1.1,
        steps=100,
        sample_rate=0.01,
        noise="csprng",
        caveats=(f"{seed * 10:,} extra training records dropped to keep one per unit",),
        public=(f"the number of training patients ({5000 + seed:,}), which sets q and δ",),
        trusts=("the machine that trains, which reads the raw training records",),
        unprotected=("validation patients (preprocessing, calibration)", "the dataset card"),
        **fields,
    )


def _document(*runs: dict) -> dict:
    return {
        "medpriv_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "config": {"data": {"spec": "synthetic"}},
        "dataset": {"name": "toy", "n_records": 5100, "n_units": 5000, "n_features": 9},
        "runs": list(runs),
    }


def _seeded() -> dict:
    """dp-sgd at three seeds whose ε differ (0.9, 1.3, 1.1), dp-logreg (replace-one, its own
    caveats) and a non-private baseline with a caveat."""
    return _document(
        _run("dp-sgd eps=1", 0, _dp(0.9, 0)),
        _run("dp-sgd eps=1", 1, _dp(1.3, 1)),
        _run("dp-sgd eps=1", 2, _dp(1.1, 2)),
        _run(
            "dp-logreg eps=1",
            0,
            PrivacySpent(
                epsilon=1.0,
                delta=0.0,
                sampling="none (one full-data release)",
                mechanism="objective perturbation",
                noise="csprng",
                adjacency="replace",
                caveats=("validation records are not protected; ε covers every training record",),
                public=("the row-norm bound (2) and C (0.002), fixed in advance",),
            ),
        ),
        _run("baseline", 0, PrivacySpent(caveats=("trained on every record without noise",))),
    )


def _sentences(document: dict) -> set[str]:
    found = set()
    for run in document["runs"]:
        for key in ("caveats", "public", "trusts", "unprotected"):
            found.update(run["privacy"].get(key) or [])
    return found


def test_headline_epsilon_is_the_largest_over_seeds_not_the_mean():
    document = _seeded()
    rows = summary.headline(document["runs"])
    dp = rows[0]
    assert dp.label == "dp-sgd eps=1" and dp.epsilon == 1.3
    assert dp.stats["epsilon"].mean == pytest.approx(1.1)  # the mean is not what is shown
    epsilon = summary.HEADLINE_COLUMNS[0]
    assert summary.cell_text(dp, epsilon) == "1.3"
    assert dp.statement_run["seed"] == 1  # the statement is the weakest seed's
    assert "(ε = 1.3)" in summary.plain_statement(dp.statement_run)
    markdown = render_markdown(document)
    assert re.search(r"^\| dp-sgd eps=1 \| 1\.3 \|", markdown, re.M)
    assert "largest over the seeds" in markdown
    assert "**dp-sgd eps=1**: Protects each patient" in markdown and "(ε = 1.3)" in markdown
    headline = render_report(document).split('<section id="headline">')[1].split("</section>")[0]
    assert '<td class="num">1.3</td>' in headline and ">1.1<" not in headline
    assert "largest over the seeds" in headline


def test_report_md_carries_every_caveat_of_every_model():
    document = _seeded()
    expected = _sentences(document)
    assert len(expected) >= 9  # per-seed caveats and counts differ; every one must appear
    markdown = render_markdown(document)
    statements = markdown.split("## Privacy statements")[1].split("## Dataset card")[0]
    for sentence in expected:
        assert sentence in statements, sentence
    for title in ("Caveat:", "Treated as public:", "Trusts:", "Not protected:"):
        assert title in statements
    privacy = render_report(document).split('<section id="privacy">')[1].split("</section>")[0]
    for sentence in expected:
        assert sentence.replace("'", "&#x27;") in privacy, sentence


def test_replace_one_adjacency_is_stated_as_such():
    row = summary.headline(_seeded()["runs"])[1]
    text = summary.plain_statement(row.statement_run)
    assert "replacing any one patient's data with another's" in text
    assert "adding or removing" not in text
    assert "(replacing one patient's data with another's)" in row.runs[0]["privacy"]["statement"]


def test_a_model_with_reproducible_noise_is_flagged_as_carrying_no_guarantee():
    normal = _seeded()
    replayable = copy.deepcopy(normal)
    replayable["runs"][3]["privacy"] = PrivacySpent(
        epsilon=1.0, delta=0.0, sampling="none", noise="reproducible"
    ).to_dict()
    page, markdown = render_report(replayable), render_markdown(replayable)
    banner = page.split('id="no-guarantee"')[1].split("</div>")[0]
    assert 'class="alert alert-danger"' in page.split('id="no-guarantee"')[0][-60:]
    assert "dp-logreg eps=1" in banner and "NO differential-privacy guarantee" in banner
    assert "dp-sgd" not in banner
    privacy = page.split('<section id="privacy">')[1].split("</section>")[0]
    assert privacy.count('<span class="tag bad">NO GUARANTEE</span>') == 1
    assert "> **NO PRIVACY GUARANTEE** — dp-logreg eps=1: trained with reproducible noise" in (
        markdown
    )
    assert "| dp-logreg eps=1 | 1 (NO GUARANTEE) |" in markdown
    assert "**dp-logreg eps=1**: NO GUARANTEE —" in markdown
    # ... and nothing of the kind for models whose noise is fresh
    assert 'id="no-guarantee"' not in render_report(normal)
    assert "NO GUARANTEE" not in render_markdown(normal)


def test_the_audit_is_never_said_to_confirm_a_claim():
    audit = {"epsilon_lower_bound": 0.12, "confidence": 0.95, "consistent": True}
    document = _document(_run("dp-sgd eps=1", 0, _dp(1.0, 0), audit=audit))
    markdown, page = render_markdown(document), render_report(document)
    for text in (markdown, page):
        assert "not contradicted" in text
        assert "consistent with" not in text.lower() and "confirmed" not in text.lower()
    assert "does not confirm it" in markdown
    attacks = page.split('<section id="attacks">')[1].split("</section>")[0]
    assert "verdict" in attacks and "not contradicted" in attacks and ">yes<" not in attacks
    failed = _document(
        _run(
            "dp-sgd eps=1",
            0,
            _dp(1.0, 0),
            audit={**audit, "epsilon_lower_bound": 2.5, "consistent": False},
        )
    )
    text = render_markdown(failed)
    assert "CONTRADICTS the claim" in text and "not contradicted" not in text.split("## Dataset")[0]
    assert ">CONTRADICTED<" in render_report(failed)


def test_the_dataset_card_says_its_counts_are_not_protected():
    document = _seeded()
    markdown = render_markdown(document)
    card = markdown.split("## Dataset card")[1]
    assert summary.CARD_UNPROTECTED in card and "5,100" in card
    page = render_report(document)
    dataset = page.split('<section id="dataset">')[1].split("</section>")[0]
    assert "no model&#x27;s ε covers them" in dataset


def test_private_rows_show_their_gap_to_the_non_private_counterpart_seed_by_seed():
    base = [_run("baseline", seed, {}) for seed in range(2)]  # AUROC 0.80, 0.81
    private = [_run("dp-sgd eps=1", seed, _dp(1.0, seed)) for seed in range(2)]
    for run, auroc in zip(private, (0.75, 0.78), strict=True):
        run["utility"]["auroc"] = auroc
    rows = {row.label: row for row in summary.headline([*base, *private])}
    gap = rows["dp-sgd eps=1"].stats["gap"]
    assert gap.mean == pytest.approx((0.05 + 0.03) / 2) and gap.n == 2
    assert rows["baseline"].stats["gap"].mean is None  # not private: no gap
    column = next(c for c in summary.HEADLINE_COLUMNS if c.key == "gap")
    assert summary.cell_text(rows["dp-sgd eps=1"], column) == "0.040 ± 0.014"
    assert column in summary.visible_columns(list(rows.values()))
    alone = summary.headline(private)  # no counterpart in the document: no gap shown
    assert alone[0].stats["gap"].mean is None


def test_a_model_no_better_than_chance_is_marked_in_the_headline_and_the_statement():
    chance = _run("dp-sgd eps=1", 0, _dp(1.0, 0))
    chance["utility"].update(auroc=0.53, auroc_ci95=[0.44, 0.61])
    useful = _run("baseline", 0, {})
    useful["utility"].update(auroc=0.84, auroc_ci95=[0.80, 0.88])
    rows = {row.label: row for row in summary.headline([chance, useful])}
    auroc = next(c for c in summary.HEADLINE_COLUMNS if c.key == "auroc")
    assert summary.cell_text(rows["dp-sgd eps=1"], auroc).endswith("no better than chance")
    assert "chance" not in summary.cell_text(rows["baseline"], auroc)
    assert "no better than chance" in summary.plain_statement(chance)
    assert "chance" not in summary.plain_statement(useful)
    seeds = [_run("dp-sgd eps=1", s, _dp(1.0, s)) for s in range(3)]
    for run, value in zip(seeds, (0.45, 0.55, 0.50), strict=True):
        run["utility"]["auroc"] = value
    assert summary.headline(seeds)[0].no_better_than_chance  # over seeds: mean ± 1.96·SD/√n
    report = render_markdown(_document(chance, useful))
    assert "no better than chance" in report
    # and the report says what each figure is measured on
    assert "measured on the model that would be released" in report
    assert "measured on the model that would be released" in render_report(_document(chance))


def test_the_hospitals_model_is_named_and_its_weights_origin_said():
    fitted = _run("model", 0, PrivacySpent(sampling="none (not private)"))
    fitted["params"] = {
        "estimator": "RandomForestClassifier",
        "model": "hospital.skops",
        "weights": "fitted elsewhere: the file's, as they are (never refitted)",
    }
    text = summary.plain_statement(fitted)
    assert text.startswith("The hospital's model (RandomForestClassifier from `hospital.skops`)")
    assert "its own fitted weights" in text
    refitted = copy.deepcopy(fitted)
    del refitted["params"]["weights"]
    assert "refitted by medpriv" in summary.plain_statement(refitted)
    baseline = _run("baseline", 0, PrivacySpent(sampling="shuffle"))
    assert summary.plain_statement(baseline).startswith("Nothing is formally protected")
