"""What one split-learning server will do for its clients: model size, sessions, time.

Every limit is checked before the work it bounds: no layer is allocated, no request waited for,
no session added beyond them. The defaults fit the tabular MLPs
medpriv trains (widths in the hundreds) with room to spare; `medpriv sl server` sets them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from medpriv.errors import ConfigError, raise_all
from medpriv.train.split.protocol import MAX_MESSAGE_BYTES

MAX_WIDTH = 4096  # units in any layer of a server part
MAX_LAYERS = 8  # linear layers in a server part
MAX_PARAMETERS = 1 << 20  # weights + biases of one part: 4 MiB, ~16 MiB with Adam
MAX_ACTIVATIONS = 1 << 24  # rows x (sum of the part's widths) in one request (64 MiB float32)
MAX_SESSIONS = 64  # open sessions, all tokens together
SESSIONS_PER_TOKEN = 8  # open sessions per token: the oldest idle one makes room for a new one
IDLE_MINUTES = 10.0  # a session unused this long is closed
REQUEST_SECONDS = 60.0  # to receive one request, from its headers to its last byte
CONNECTION_MINUTES = 30.0  # a connection is asked to reconnect after this long
MAX_RPCS = 64  # calls in flight, all connections together (the rest: RESOURCE_EXHAUSTED)
STREAMS_PER_CONNECTION = 16  # concurrent calls on one HTTP/2 connection
WORKERS = 4  # threads that run fully received, authenticated requests


@dataclass(frozen=True)
class ServerLimits:
    """The bounds one server enforces (validated: every value finite and positive)."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_width: int = MAX_WIDTH
    max_layers: int = MAX_LAYERS
    max_parameters: int = MAX_PARAMETERS
    max_activations: int = MAX_ACTIVATIONS
    max_sessions: int = MAX_SESSIONS
    sessions_per_token: int = SESSIONS_PER_TOKEN
    idle_minutes: float = IDLE_MINUTES
    request_seconds: float = REQUEST_SECONDS
    connection_minutes: float = CONNECTION_MINUTES
    max_rpcs: int = MAX_RPCS
    streams_per_connection: int = STREAMS_PER_CONNECTION
    workers: int = WORKERS

    def __post_init__(self) -> None:
        problems = []
        for name, value in asdict(self).items():
            whole = isinstance(getattr(type(self), name), int)
            if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
                kind = "a whole number" if whole else "a number"
                problems.append(f"{name} must be {kind}, got {value!r}")
            elif not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be finite and positive, got {value!r}")
        if not problems and self.sessions_per_token > self.max_sessions:
            problems.append(
                f"sessions_per_token ({self.sessions_per_token}) exceeds max_sessions "
                f"({self.max_sessions})"
            )
        raise_all(problems, ConfigError)

    @property
    def idle_seconds(self) -> float:
        return self.idle_minutes * 60.0

    def max_rows(self, widths: Sequence[int]) -> int:
        """The most activation rows one request may carry through a part of these widths."""
        return max(1, self.max_activations // sum(widths))
