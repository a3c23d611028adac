"""The server's limits, in process: shapes checked before anything is allocated, per-token
sessions with the oldest idle one evicted first, idle expiry (on an injected clock), and the
activation rows per request (which the client respects by splitting)."""

from __future__ import annotations

import itertools
import resource
import time

import numpy as np
import pytest

from medpriv.errors import ConfigError, ProtocolError
from medpriv.train.split import server as server_module
from medpriv.train.split.client import RemotePart
from medpriv.train.split.limits import ServerLimits
from medpriv.train.split.protocol import Envelope, decode, encode
from medpriv.train.split.server import SplitServer
from medpriv.train.split.transport import InProcessTransport

SGD = {"optimizer": "sgd", "lr": 0.1}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _weights(widths: list[int]) -> list[np.ndarray]:
    out = []
    for a, b in itertools.pairwise(widths):
        out += [np.full((b, a), 0.1, np.float32), np.zeros(b, np.float32)]
    return out


def _open(server: SplitServer, token: str = "", widths: tuple[int, ...] = (8, 4, 2)) -> RemotePart:
    remote = RemotePart(InProcessTransport(server), token=token)
    remote.open("vanilla", list(widths), _weights(list(widths)), SGD)
    return remote


def _step(remote: RemotePart) -> None:
    remote.train(np.ones((4, 8), np.float32), np.array([0, 1, 0, 1]))


def _refusal(server: SplitServer, message: Envelope) -> str:
    reply = decode(server.handle(encode(message)))
    assert reply.op == "error", reply
    return str(reply.meta["error"])


def test_limits_gather_every_problem_and_name_it():
    with pytest.raises(ConfigError) as caught:
        ServerLimits(max_width=0, idle_minutes=float("nan"), max_layers=True, workers=2.5)
    message = str(caught.value)
    for name in ("max_width", "idle_minutes", "max_layers", "workers"):
        assert name in message
    with pytest.raises(ConfigError, match="exceeds max_sessions"):
        ServerLimits(max_sessions=4, sessions_per_token=5)
    assert ServerLimits(idle_minutes=0.5).idle_seconds == 30.0


@pytest.mark.parametrize(
    ("widths", "limits", "named"),
    [
        ([65536] * 3, ServerLimits(), "--max-width"),
        ([65536] * 3, ServerLimits(max_width=1 << 17), "--max-parameters"),
        ([8192] * 3, ServerLimits(), "--max-width"),
        ([4] * 10 + [2], ServerLimits(), "--max-layers"),
        ([8, 0, 2], ServerLimits(), "between 1 and"),
    ],
)
def test_a_part_too_large_is_refused_before_anything_is_allocated(
    widths, limits, named, monkeypatch
):
    def never(*_args, **_kwargs):
        raise AssertionError("a part was built before its shape was checked")

    monkeypatch.setattr(server_module, "build_part", never)
    server = SplitServer(limits=limits)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    why = _refusal(server, Envelope("open", [], {"mode": "vanilla", "widths": widths}))
    assert named in why and time.perf_counter() - start < 0.5
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown_kib < 20 * 1024 and server.sessions == {}


def test_a_part_at_the_parameter_limit_is_accepted():
    limits = ServerLimits(max_parameters=8 * 4 + 4 + 4 * 2 + 2)
    _open(SplitServer(limits=limits))
    with pytest.raises(ProtocolError, match="46 parameters"):
        _open(SplitServer(limits=ServerLimits(max_parameters=45)))


def test_bad_optimizer_settings_are_refused_before_the_part_is_built():
    server = SplitServer()
    for spec, why in (
        ({"optimizer": "lbfgs", "lr": 0.1}, "unknown optimizer"),
        ({"lr": 0}, "'lr' out of range"),
        ({"lr": True}, "'lr' must be a number"),
        ({"lr": 0.1, "momentum": 1.0}, "below 1"),
        ([], "must be an object"),
    ):
        meta = {"mode": "vanilla", "widths": [8, 4, 2], "optimizer": spec}
        assert why in _refusal(server, Envelope("open", _weights([8, 4, 2]), meta))
    assert server.sessions == {}


def test_each_token_holds_its_own_sessions_and_its_oldest_idle_one_makes_room():
    clock = Clock()
    limits = ServerLimits(sessions_per_token=2)
    server = SplitServer(tokens=("alice", "mallory"), limits=limits, clock=clock)
    first = _open(server, "alice")
    clock.now += 1
    second = _open(server, "alice")
    clock.now += 1
    _step(first)  # the first one is in use again: the second is now the oldest idle
    clock.now += 1
    third = _open(server, "alice")
    assert set(server.sessions) == {first.session, third.session}
    with pytest.raises(ProtocolError, match="evicted: its token opened a newer session"):
        _step(second)
    # Another token's requests never reach these sessions, and its opens evict only its own.
    intruder = Envelope("close", session=first.session, seq=first.seq + 1, token="mallory")
    assert "no open session" in _refusal(server, intruder)
    for _ in range(63):
        _open(server, "mallory")  # the lock-out attempt: opened, never closed
    assert sorted(s.owner for s in server.sessions.values()) == [0, 0, 1, 1]
    _step(first)
    _step(third)


def test_a_shared_token_cannot_lock_out_a_new_client():
    server = SplitServer(token="shared")
    for _ in range(63):
        _open(server, "shared")  # opened and never closed
    assert len(server.sessions) == server.limits.sessions_per_token
    legit = _open(server, "shared")
    _step(legit)
    assert legit.session in server.sessions


def test_a_full_server_evicts_the_oldest_idle_session_of_the_biggest_holder():
    clock = Clock()
    limits = ServerLimits(sessions_per_token=3, max_sessions=4)
    server = SplitServer(tokens=("a", "b", "c"), limits=limits, clock=clock)
    a1 = _open(server, "a")
    clock.now += 1
    b1, b2 = _open(server, "b"), _open(server, "b")
    clock.now += 1
    a2 = _open(server, "a")
    clock.now += 1
    _step(b1)
    c1 = _open(server, "c")  # a and b hold two each: the oldest idle of them is a1
    assert set(server.sessions) == {a2.session, b1.session, b2.session, c1.session}
    assert a1.session not in server.sessions


def test_a_session_idle_past_the_limit_is_closed_and_says_so():
    clock = Clock()
    server = SplitServer(limits=ServerLimits(idle_minutes=2), clock=clock)
    quiet, busy = _open(server), _open(server)
    clock.now += 90
    _step(busy)
    clock.now += 60  # quiet: 150 s idle; busy: 60 s
    _step(busy)
    assert set(server.sessions) == {busy.session}
    with pytest.raises(ProtocolError, match="expired after 2 min idle"):
        _step(quiet)


def test_requests_carry_at_most_the_rows_the_server_takes_and_the_client_splits():
    limits = ServerLimits(max_activations=14 * 5)  # widths 8+4+2: five rows per request
    server = SplitServer(limits=limits)
    remote = _open(server)
    assert remote.max_rows == 5
    h = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    train = Envelope("train", [h, np.zeros(12, np.int64)], session=remote.session, seq=1)
    assert "at most 5" in _refusal(server, train)
    before = remote.traffic.round_trips
    out = remote.infer(h)
    assert remote.traffic.round_trips - before == 3 and out.shape == (12, 2)
    whole = _open(SplitServer()).infer(h)
    np.testing.assert_allclose(out, whole, rtol=1e-6)
