"""Self-contained HTML reports from results.json (standard library, numpy and matplotlib only)."""

from medpriv.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
