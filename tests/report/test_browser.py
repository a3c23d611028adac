"""The report renders in a real browser: headless Chromium loads it offline, no console errors,
every image decodes, and a screenshot is saved (skipped with a reason where Chromium is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medpriv.config import load_config
from medpriv.experiment import RunPaths, run_experiment
from tests.report.browser import check_page, find_chromium

CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt install chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path):
    config = load_config(
        None,
        {
            "data": {"spec": "synthetic:1500"},
            "run": {
                "methods": ["baseline", "dp-sgd@2", "fedavg"],
                "attacks": ["mia_loss", "mia_lira", "audit"],
                "shadow_models": 4,
                "bootstrap": 50,
            },
            "train": {"epochs": 3},
            "federated": {"rounds": 3},
        },
    )
    paths = RunPaths(tmp_path / "run")
    run_experiment(config, paths=paths)
    screenshot = tmp_path / "report.png"
    check = check_page(paths.report, screenshot, binary=str(CHROMIUM))
    assert check.errors == []
    alts = [image["alt"] for image in check.images]
    for figure in ("Privacy–utility frontier", "ROC curves", "Calibration", "Federated rounds"):
        assert figure in alts
    broken = [image for image in check.images if not image["complete"] or image["width"] < 100]
    assert broken == []
    assert check.height > 2000  # the whole page laid out, not an error page
    assert check.sections.get("who-pays", 0) > 300  # the subgroup tables laid out
    assert (
        screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
    )
