"""Writing report files: atomically, so a reader never sees half a page."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(text: str, path: Path) -> Path:
    """Write `text` via a temp file in the same directory and an atomic rename (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_reports(document: dict, folder: Path) -> tuple[Path, Path]:
    """report.html and report.md for a results document, in `folder`."""
    from medpriv.report.html import render_report
    from medpriv.report.markdown import render_markdown

    folder = Path(folder)
    html = write_text_atomic(render_report(document), folder / "report.html")
    markdown = write_text_atomic(render_markdown(document) + "\n", folder / "report.md")
    return html, markdown
