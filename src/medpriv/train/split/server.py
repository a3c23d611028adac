"""The split-learning server: it holds the middle of the network for each client session and
answers forward / backward / step requests (`medpriv.train.split.protocol`).

Modes: `vanilla` — the client sends its cut-layer activations and labels; the server finishes
the forward pass, computes the loss, steps its optimizer and returns the gradient at the cut (one
round trip per batch). `ushaped` — the client keeps the output layer and the labels: `forward`
returns the server's activations, `backward` takes their gradient, steps, and returns the
gradient at the cut (two round trips); the server never sees a label.

`handle(bytes) -> bytes` never raises: a malformed, oversized, unauthenticated, out-of-order or
over-limit request gets an error reply and at most one log line (fields from the network are
escaped; no activations or labels are logged; refusals are rate-limited), and the server keeps
serving its other sessions.

Limits (`medpriv.train.split.limits`): a part's shape is checked before anything is allocated;
each token may hold `sessions_per_token` sessions and the server `max_sessions` (when full, the
oldest idle session of the token holding the most makes room); a session idle for
`idle_minutes` is closed. With several tokens (one per client), a session belongs to the token
that opened it.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import math
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.errors import ProtocolError
from medpriv.train.split.limits import ServerLimits
from medpriv.train.split.protocol import Envelope, decode, encode, expect
from medpriv.untrusted import printable

log = logging.getLogger(__name__)
MODES = ("vanilla", "ushaped")
OPTIMIZERS = ("adam", "sgd")
OPTIMIZER_SLOTS = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
REFUSALS_LOGGED = 20  # refusal lines per `REFUSAL_WINDOW` seconds; the rest are counted
REFUSAL_WINDOW = 10.0
REMEMBERED_ENDS = 1024  # ended session ids kept to say why a later request finds none


def build_part(widths: list[int], *, final_relu: bool) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (and after the last one when
    `final_relu`: the server's part in U-shaped learning ends at a hidden layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if final_relu or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def optimizer_spec(spec: Any) -> dict[str, Any]:
    """The optimizer hyper-parameters a client sent, checked: a known name, a finite positive
    learning rate, momentum in [0, 1), a finite non-negative weight decay."""
    if not isinstance(spec, dict):
        raise ProtocolError("'optimizer' must be an object of hyper-parameters")
    name = spec.get("optimizer", "adam")
    if name not in OPTIMIZERS:
        raise ProtocolError(f"unknown optimizer {printable(name)!r}; use one of {OPTIMIZERS}")
    numbers = {"lr": spec.get("lr")}
    numbers["momentum"] = spec.get("momentum", 0.0)
    numbers["weight_decay"] = spec.get("weight_decay", 0.0)
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(f"optimizer {key!r} must be a number")
        if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
            raise ProtocolError(f"optimizer {key!r} out of range: {value!r}")
    if numbers["momentum"] >= 1:
        raise ProtocolError("optimizer 'momentum' must be below 1")
    return {"optimizer": name, **{k: float(v) for k, v in numbers.items()}}


def make_optimizer(params: Any, spec: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, from the hyper-parameters a client sends (as `new_network`)."""
    checked = optimizer_spec(spec)
    lr, decay = checked["lr"], checked["weight_decay"]
    if checked["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=checked["momentum"], weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=decay)


def part_shapes(widths: Sequence[int]) -> list[tuple[int, ...]]:
    """The parameter shapes of `build_part(widths)`, in order (weight, bias per layer)."""
    return [shape for a, b in itertools.pairwise(widths) for shape in ((b, a), (b,))]


def optimizer_arrays(optimizer: torch.optim.Optimizer) -> tuple[list[str], list[np.ndarray]]:
    """The optimizer's per-parameter state as named arrays ('<param index>.<key>')."""
    names, arrays = [], []
    for index, slots in optimizer.state_dict()["state"].items():
        for key, value in slots.items():
            names.append(f"{index}.{key}")
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            arrays.append(tensor.detach().cpu().numpy().astype(np.float32, copy=True))
    return names, arrays


def load_optimizer_arrays(
    optimizer: torch.optim.Optimizer, names: list[str], arrays: list[np.ndarray]
) -> None:
    """Restore slots saved by `optimizer_arrays`: each name '<param index>.<slot>' for a known
    slot of an existing parameter, each array of its parameter's shape ('step': a scalar)."""
    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, array in zip(names, arrays, strict=True):
        index, _, key = name.partition(".")
        if not index.isdigit() or int(index) >= len(params) or key not in OPTIMIZER_SLOTS:
            raise ProtocolError(f"load: no optimizer slot {printable(name)!r}")
        shape = () if key == "step" else tuple(params[int(index)].shape)
        if tuple(array.shape) != shape or not np.issubdtype(array.dtype, np.floating):
            raise ProtocolError(f"load: slot {printable(name)!r} of shape {array.shape}")
        if not np.isfinite(array).all():
            raise ProtocolError(f"load: slot {printable(name)!r} holds NaN or infinite values")
        state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(array, np.float32))
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


@dataclass
class Session:
    """One client's server-side part and where its protocol stands."""

    mode: str
    network: nn.Sequential
    optimizer: torch.optim.Optimizer
    widths: list[int]
    owner: int  # index of the token that opened it
    last_used: float  # by the server's clock
    seq: int = 0
    pending: tuple[torch.Tensor, torch.Tensor] | None = None  # U-shaped: (input, output)
    steps: int = 0

    @property
    def in_features(self) -> int:
        return self.widths[0]


class RefusalLog:
    """Warnings about refused requests, at most `per_window` lines per `window` seconds (a
    flood of bad requests must not flood the log); the rest are counted in the next line."""

    def __init__(self, per_window: int = REFUSALS_LOGGED, window: float = REFUSAL_WINDOW) -> None:
        self.per_window, self.window = per_window, window
        self._start, self._lines, self._dropped = time.monotonic(), 0, 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._start >= self.window:
                self._start, self._lines = now, 0
            if self._lines >= self.per_window:
                self._dropped += 1
                return
            self._lines += 1
            dropped, self._dropped = self._dropped, 0
        if dropped:
            message += f" ({dropped} earlier refusals not logged)"
        log.warning(message, *args)


@dataclass
class SplitServer:
    """Sessions by id; thread-safe (one lock: requests are served one at a time).

    `token` (or several `tokens`, one per client) is the shared secret a request must carry;
    none means anyone who can reach the server may use it. `clock` (seconds, monotonic) times
    idleness; tests pass their own."""

    token: str | None = None
    tokens: tuple[str, ...] = ()
    limits: ServerLimits = field(default_factory=ServerLimits)
    sessions: dict[str, Session] = field(default_factory=dict)
    refusals: RefusalLog = field(default_factory=RefusalLog)
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ended: OrderedDict[str, tuple[int, str]] = field(default_factory=OrderedDict)

    @property
    def max_bytes(self) -> int:
        return self.limits.max_message_bytes

    @property
    def accepted_tokens(self) -> tuple[str, ...]:
        return (*((self.token,) if self.token else ()), *self.tokens)

    def authenticate(self, token: str) -> int:
        """The index of the accepted token `token` is (0 when the server needs none); a
        ProtocolError when it is none of them. Constant time in the token's content."""
        accepted = self.accepted_tokens
        if not accepted:
            return 0
        given, owner = token.encode("utf-8", "surrogatepass"), -1
        for index, expected in enumerate(accepted):
            if hmac.compare_digest(given, expected.encode()):
                owner = index
        if owner < 0:
            raise ProtocolError("unauthenticated: wrong or missing token")
        return owner

    def handle(self, data: bytes) -> bytes:
        """One request in, one reply out; errors become error replies."""
        try:
            request = decode(data, max_bytes=self.max_bytes)
        except Exception as exc:  # decode raises only ProtocolError; anything else is a bug
            reason = str(exc) if isinstance(exc, ProtocolError) else type(exc).__name__
            self.refusals.warning("refused a malformed request: %s", printable(reason))
            return encode(Envelope("error", meta={"error": f"malformed request: {reason}"}))
        try:
            owner = self.authenticate(request.token)
            # In process the caller may be under torch.no_grad(); the server's autograd is its own.
            with self._lock, torch.enable_grad():
                reply = self._dispatch(request, owner)
            return encode(reply, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            self.refusals.warning(
                "refused %s (session %s): %s",
                printable(request.op),
                printable(request.session[:8]),
                printable(str(exc)),
            )
            return encode(request.error(str(exc)))
        except Exception as exc:  # a bug must not take the other sessions down
            log.exception(
                "failed %s (session %s)", printable(request.op), printable(request.session[:8])
            )
            return encode(request.error(f"internal error: {type(exc).__name__}"))

    def _dispatch(self, request: Envelope, owner: int) -> Envelope:
        self._expire_idle()
        if request.op == "open":
            return self._open(request, owner)
        session = self.sessions.get(request.session)
        if session is None or session.owner != owner:
            ended = self._ended.get(request.session)
            why = f" ({ended[1]})" if ended is not None and ended[0] == owner else ""
            raise ProtocolError(f"no open session {request.session[:8]!r}{why}; send 'open' first")
        if request.seq != session.seq + 1:
            raise ProtocolError(f"out of order: expected seq {session.seq + 1}, got {request.seq}")
        handler = {
            "train": self._train,
            "forward": self._forward,
            "backward": self._backward,
            "infer": self._infer,
            "state": self._state,
            "load": self._load,
            "close": self._close,
        }.get(request.op)
        if handler is None:
            raise ProtocolError(f"unknown op {request.op!r}")
        reply = handler(session, request)
        session.seq, session.last_used = request.seq, self.clock()
        return reply

    # --- sessions ----------------------------------------------------------------------------

    def _end(self, session_id: str, why: str) -> None:
        session = self.sessions.pop(session_id)
        self._ended[session_id] = (session.owner, why)
        while len(self._ended) > REMEMBERED_ENDS:
            self._ended.popitem(last=False)
        log.info("session %s %s after %d steps", session_id[:8], why, session.steps)

    def _expire_idle(self) -> None:
        """Close the sessions whose client went quiet (crashed without closing)."""
        now, limit = self.clock(), self.limits.idle_seconds
        for session_id, session in list(self.sessions.items()):
            if now - session.last_used > limit:
                self._end(session_id, f"expired after {self.limits.idle_minutes:g} min idle")

    def _make_room(self, owner: int) -> None:
        """Before a session of token `owner` opens: at its token's limit, that token's oldest
        idle session ends; with the server full, the oldest idle one of the biggest holder."""
        mine = [(s.last_used, sid) for sid, s in self.sessions.items() if s.owner == owner]
        if len(mine) >= self.limits.sessions_per_token:
            self._end(min(mine)[1], "evicted: its token opened a newer session")
        elif len(self.sessions) >= self.limits.max_sessions:
            counts = Counter(s.owner for s in self.sessions.values())
            most = max(counts.values())
            held = [(s.last_used, i) for i, s in self.sessions.items() if counts[s.owner] == most]
            self._end(min(held)[1], "evicted: the server was full")

    # --- ops ---------------------------------------------------------------------------------

    def _widths(self, meta: dict[str, Any], mode: str) -> list[int]:
        """The requested layer widths, checked against the limits (nothing allocated yet)."""
        widths, limits = meta.get("widths"), self.limits
        if not isinstance(widths, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in widths
        ):
            raise ProtocolError("open needs 'widths', a list of whole layer widths")
        if not 2 <= len(widths) <= limits.max_layers + 1:
            raise ProtocolError(
                f"a server part of {len(widths) - 1} layers; this server allows 1 to "
                f"{limits.max_layers} (--max-layers)"
            )
        if min(widths) < 1 or max(widths) > limits.max_width:
            raise ProtocolError(
                f"layer widths must be between 1 and {limits.max_width} (--max-width)"
            )
        parameters = sum(math.prod(shape) for shape in part_shapes(widths))
        if parameters > limits.max_parameters:
            raise ProtocolError(
                f"a server part of {parameters} parameters; this server allows "
                f"{limits.max_parameters} (--max-parameters)"
            )
        if mode == "vanilla" and widths[-1] != 2:
            raise ProtocolError("the vanilla server part must end in the 2 output logits")
        return widths

    def _open(self, request: Envelope, owner: int) -> Envelope:
        meta = request.meta
        mode = meta.get("mode")
        if mode not in MODES:
            raise ProtocolError(f"mode must be one of {MODES}, got {printable(mode)!r}")
        widths = self._widths(meta, mode)
        spec = optimizer_spec(meta.get("optimizer", {"lr": 1e-3}))
        shapes = part_shapes(widths)
        expect(request, len(shapes), dtypes=dict.fromkeys(range(len(shapes)), "float"))
        for a, shape in zip(request.arrays, shapes, strict=True):
            if tuple(a.shape) != shape:
                raise ProtocolError(f"initial weight of shape {a.shape}, expected {shape}")
            if not np.isfinite(a).all():
                raise ProtocolError("initial weights hold NaN or infinite values")
        self._make_room(owner)
        network = build_part(widths, final_relu=mode == "ushaped")
        with torch.no_grad():
            for p, a in zip(network.parameters(), request.arrays, strict=True):
                p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        optimizer = make_optimizer(network.parameters(), spec)
        session_id = uuid.uuid4().hex
        self.sessions[session_id] = Session(mode, network, optimizer, widths, owner, self.clock())
        log.info("session %s opened: %s, widths %s, token %d", session_id[:8], mode, widths, owner)
        meta = {"session": session_id, "max_rows": self.limits.max_rows(widths)}
        return Envelope("ok", [], meta, id=request.id, session=session_id)

    def _activations(self, session: Session, request: Envelope, index: int = 0) -> torch.Tensor:
        h = request.arrays[index]
        if h.ndim != 2 or h.shape[1] != session.in_features:
            raise ProtocolError(
                f"activations of shape {h.shape}, expected (batch, {session.in_features})"
            )
        rows = self.limits.max_rows(session.widths)
        if h.shape[0] > rows:
            raise ProtocolError(f"a batch of {h.shape[0]} rows; this part takes at most {rows}")
        if not np.isfinite(h).all():
            raise ProtocolError("activations hold NaN or infinite values")
        return torch.from_numpy(np.asarray(h, dtype=np.float32))

    def _train(self, session: Session, request: Envelope) -> Envelope:
        if session.mode != "vanilla":
            raise ProtocolError(
                "'train' is the vanilla op; a U-shaped session uses forward/backward"
            )
        expect(request, 2, dtypes={0: "float", 1: "int"})
        h = self._activations(session, request).requires_grad_(True)
        y = request.arrays[1]
        if y.shape != (h.shape[0],) or not np.isin(y, (0, 1)).all():
            raise ProtocolError("labels must be 0/1, one per activation row")
        session.network.train()
        session.optimizer.zero_grad(set_to_none=True)
        logits = session.network(h)
        F.cross_entropy(logits, torch.from_numpy(y.astype(np.int64))).backward()
        session.optimizer.step()
        session.steps += 1
        return request.reply([h.grad.numpy(), logits.detach().numpy()])

    def _forward(self, session: Session, request: Envelope) -> Envelope:
        if session.mode != "ushaped":
            raise ProtocolError("'forward' is a U-shaped op; a vanilla session uses 'train'")
        expect(request, 1, dtypes={0: "float"})
        h = self._activations(session, request).requires_grad_(True)
        session.network.train()
        session.optimizer.zero_grad(set_to_none=True)
        z = session.network(h)
        session.pending = (h, z)
        return request.reply([z.detach().numpy()])

    def _backward(self, session: Session, request: Envelope) -> Envelope:
        if session.pending is None:
            raise ProtocolError("out of order: 'backward' without a pending 'forward'")
        expect(request, 1, dtypes={0: "float"})
        h, z = session.pending
        grad = request.arrays[0]
        if tuple(grad.shape) != tuple(z.shape) or not np.isfinite(grad).all():
            raise ProtocolError(f"gradient of shape {grad.shape}, expected {tuple(z.shape)}")
        session.pending = None
        z.backward(torch.from_numpy(np.asarray(grad, dtype=np.float32)))
        session.optimizer.step()
        session.steps += 1
        return request.reply([h.grad.numpy()])

    @torch.no_grad()
    def _infer(self, session: Session, request: Envelope) -> Envelope:
        expect(request, 1, dtypes={0: "float"})
        h = self._activations(session, request)
        session.network.eval()
        out = session.network(h)
        session.network.train()
        return request.reply([out.numpy()])

    def _state(self, session: Session, request: Envelope) -> Envelope:
        weights = [p.detach().numpy().copy() for p in session.network.parameters()]
        names, slots = optimizer_arrays(session.optimizer)
        return request.reply([*weights, *slots], weights=len(weights), optimizer=names)

    def _load(self, session: Session, request: Envelope) -> Envelope:
        params = list(session.network.parameters())
        names = request.meta.get("optimizer", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("load: 'optimizer' must be a list of slot names")
        if len(request.arrays) != len(params) + len(names):
            raise ProtocolError("load: the arrays do not match the weights and optimizer slots")
        for p, a in zip(params, request.arrays, strict=False):
            if tuple(a.shape) != tuple(p.shape) or not np.issubdtype(a.dtype, np.floating):
                raise ProtocolError(f"load: weight of shape {a.shape}, expected {p.shape}")
            if not np.isfinite(a).all():
                raise ProtocolError("load: weights hold NaN or infinite values")
        slots = request.arrays[len(params) :]
        if names:
            saved = session.optimizer.state_dict()
            try:
                load_optimizer_arrays(session.optimizer, names, slots)
            except (ValueError, KeyError, RuntimeError) as exc:
                session.optimizer.load_state_dict(saved)
                if isinstance(exc, ProtocolError):
                    raise
                raise ProtocolError(f"load: bad optimizer state: {printable(str(exc))}") from None
        with torch.no_grad():
            for p, a in zip(params, request.arrays, strict=False):
                p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        session.pending = None
        return request.reply()

    def _close(self, session: Session, request: Envelope) -> Envelope:
        self._end(request.session, "closed")
        return request.reply(steps=session.steps)
