"""Writing report files: atomically, so a reader never sees half a page."""

from __future__ import annotations

from pathlib import Path

from medpriv.files import output_folder, write_text_atomic


def write_reports(document: dict, folder: Path) -> tuple[Path, Path]:
    """report.html and report.md for a results document, in `folder` (checked first)."""
    from medpriv.report.html import render_report
    from medpriv.report.markdown import render_markdown

    folder = output_folder(folder, option="report folder")
    html = write_text_atomic(render_report(document), folder / "report.html")
    markdown = write_text_atomic(render_markdown(document) + "\n", folder / "report.md")
    return html, markdown
