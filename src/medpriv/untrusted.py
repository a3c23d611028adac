"""Text that came from another party (a network message, a peer's reply), made safe to log.

A field from the network is never written to a log as it is: a newline in it would forge a log
line, a terminal escape would rewrite the operator's screen, and a megabyte of it would bury
everything else. `printable` escapes every control and non-ASCII character and truncates.
"""

from __future__ import annotations

LOG_FIELD_LIMIT = 160


def printable(value: object, limit: int = LOG_FIELD_LIMIT) -> str:
    """`value` (or its repr, if not a string) on one line: control and non-ASCII characters and
    backslashes escaped (`\\n`, `\\x1b`, `\\u2028`), cut to `limit` characters with a count."""
    text = value if isinstance(value, str) else repr(value)
    escaped = text.encode("unicode_escape").decode("ascii")
    if len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}...[{len(escaped) - limit} more chars]"
