"""Push messages to SuperNodes and pull their replies, with our own poll interval (Flower's
`Grid.send_and_receive` sleeps 3 s between pulls)."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping

from flwr.app import Message
from flwr.serverapp import Grid


def exchange(
    grid: Grid, messages: Mapping[Hashable, Message], timeout: float, poll: float
) -> dict[Hashable, Message | str]:
    """Push every message, pull replies until all arrived or `timeout` passed. Each key maps to
    its reply, or to why there is none as text (an error reply, or no reply in time)."""
    if not messages:
        return {}
    keys = list(messages)
    ids = list(grid.push_messages([messages[k] for k in keys]))
    by_id = dict(zip(ids, keys, strict=True))
    out: dict[Hashable, Message | str] = {}
    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            message_id = reply.metadata.reply_to_message_id
            if message_id not in pending:
                continue
            pending.discard(message_id)
            key = by_id[message_id]
            if reply.has_error():
                out[key] = f"failed: error {reply.error.code}: {reply.error.reason}"
            else:
                out[key] = reply
        if pending:
            time.sleep(poll)
    for message_id in pending:
        out[by_id[message_id]] = f"no reply within {timeout:g} s"
    return out
