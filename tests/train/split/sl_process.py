"""`medpriv sl server` as a child process on 127.0.0.1: started with --port 0, ready when it
prints its "listening on" line, stopped by PID."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from medpriv.processes import Process, wait_until

START_SECONDS = 60.0


def start_sl_server(folder: Path, tokens: list[str], *options: str) -> tuple[Process, int]:
    """The server (one token per line of its token file) and the port it listens on."""
    token_file = folder / "tokens"
    token_file.write_text("\n".join(tokens) + "\n")
    command = [
        str(Path(sys.executable).parent / "medpriv"),
        "sl",
        "server",
        "--port",
        "0",
        "--token-file",
        str(token_file),
        *options,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = Process("sl-server", command, env=env, log=folder / "server.log")
    found: dict[str, int] = {}

    def ready() -> bool:
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", server.log())
        if match:
            found["port"] = int(match.group(1))
        if not server.alive():
            raise AssertionError(server.log())
        return bool(match)

    try:
        wait_until(ready, timeout=START_SECONDS, what="the split-learning server")
    except BaseException:
        server.stop()
        raise
    return server, found["port"]


def resident_mib(pid: int) -> float:
    """The process's resident memory now (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
