"""A field from the network is logged on one line, escaped and bounded."""

from __future__ import annotations

from medpriv.untrusted import printable


def test_newlines_and_escapes_cannot_forge_a_log_line():
    forged = "site-a\n2026-12-01 INFO session abc opened\r\x1b[2J\u2028"
    line = printable(forged)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.startswith("site-a\\n2026-12-01") and "\\x1b" in line and "\\u2028" in line


def test_long_fields_are_cut_with_a_count():
    line = printable("x" * 10_000, limit=50)
    assert line.startswith("x" * 50) and line.endswith("[9950 more chars]")


def test_non_strings_are_shown_by_repr():
    assert printable({"round": 3}) == "{'round': 3}"
    assert printable(b"\x00") == "b'\\\\x00'"
