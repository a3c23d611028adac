"""The split-learning server: it holds the middle of the network for each client session and
answers forward / backward / step requests (`medpriv.train.split.protocol`).

Modes: `vanilla` — the client sends its cut-layer activations and labels; the server finishes
the forward pass, computes the loss, steps its optimizer and returns the gradient at the cut (one
round trip per batch). `ushaped` — the client keeps the output layer and the labels: `forward`
returns the server's activations, `backward` takes their gradient, steps, and returns the
gradient at the cut (two round trips); the server never sees a label.

`handle(bytes) -> bytes` never raises: a malformed, oversized, unauthenticated or out-of-order
request gets an error reply and one log line (no activations or labels are logged), and the
server keeps serving its other sessions.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.errors import ProtocolError
from medpriv.train.split.protocol import MAX_MESSAGE_BYTES, Envelope, decode, encode, expect

log = logging.getLogger(__name__)
MODES = ("vanilla", "ushaped")


def build_part(widths: list[int], *, final_relu: bool) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (and after the last one when
    `final_relu`: the server's part in U-shaped learning ends at a hidden layer)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if final_relu or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_optimizer(params: Any, spec: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, from the hyper-parameters a client sends (as `new_network`)."""
    name, lr = str(spec.get("optimizer", "adam")), float(spec["lr"])
    decay = float(spec.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(spec.get("momentum", 0.0)), weight_decay=decay
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    raise ProtocolError(f"unknown optimizer {name!r}")


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
    current = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, array in zip(names, arrays, strict=True):
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(array))
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


@dataclass
class Session:
    """One client's server-side part and where its protocol stands."""

    mode: str
    network: nn.Sequential
    optimizer: torch.optim.Optimizer
    in_features: int
    seq: int = 0
    pending: tuple[torch.Tensor, torch.Tensor] | None = None  # U-shaped: (input, output)
    steps: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class SplitServer:
    """Sessions by id; thread-safe (one lock: requests are served one at a time)."""

    token: str | None = None
    max_bytes: int = MAX_MESSAGE_BYTES
    max_sessions: int = 64
    idle_timeout: float = 1800.0  # a session unused this long is dropped when room is needed
    sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, data: bytes) -> bytes:
        """One request in, one reply out; errors become error replies."""
        try:
            request = decode(data, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            log.warning("refused a malformed request: %s", exc)
            return encode(Envelope("error", meta={"error": f"malformed request: {exc}"}))
        try:
            self._authenticate(request)
            # In process the caller may be under torch.no_grad(); the server's autograd is its own.
            with self._lock, torch.enable_grad():
                reply = self._dispatch(request)
            return encode(reply, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            log.warning("refused %s (session %s): %s", request.op, request.session[:8], exc)
            return encode(request.error(str(exc)))
        except Exception as exc:  # a bug must not take the other sessions down
            log.exception("failed %s (session %s)", request.op, request.session[:8])
            return encode(request.error(f"internal error: {type(exc).__name__}: {exc}"))

    def _authenticate(self, request: Envelope) -> None:
        if self.token is not None and not hmac.compare_digest(
            request.token.encode(), self.token.encode()
        ):
            raise ProtocolError("unauthenticated: wrong or missing token")

    def _dispatch(self, request: Envelope) -> Envelope:
        if request.op == "open":
            return self._open(request)
        session = self.sessions.get(request.session)
        if session is None:
            raise ProtocolError(f"no open session {request.session[:8]!r}; send 'open' first")
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
        session.seq, session.last_used = request.seq, time.monotonic()
        return reply

    # --- ops ---------------------------------------------------------------------------------

    def _open(self, request: Envelope) -> Envelope:
        meta = request.meta
        mode = str(meta.get("mode"))
        if mode not in MODES:
            raise ProtocolError(f"mode must be one of {MODES}, got {mode!r}")
        try:
            widths = [int(w) for w in meta["widths"]]
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("open needs 'widths', a list of layer widths") from None
        if len(widths) < 2 or min(widths) < 1 or max(widths) > 1 << 16:
            raise ProtocolError(f"bad layer widths {widths}")
        if mode == "vanilla" and widths[-1] != 2:
            raise ProtocolError("the vanilla server part must end in the 2 output logits")
        if len(self.sessions) >= self.max_sessions:
            self._drop_idle()
        if len(self.sessions) >= self.max_sessions:
            raise ProtocolError(f"server full ({self.max_sessions} sessions)")
        network = build_part(widths, final_relu=mode == "ushaped")
        params = list(network.parameters())
        expect(request, len(params), dtypes=dict.fromkeys(range(len(params)), "float"))
        with torch.no_grad():
            for p, a in zip(params, request.arrays, strict=True):
                if tuple(a.shape) != tuple(p.shape):
                    raise ProtocolError(f"initial weight of shape {a.shape}, expected {p.shape}")
                p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        optimizer = make_optimizer(network.parameters(), meta.get("optimizer", {"lr": 1e-3}))
        session_id = uuid.uuid4().hex
        self.sessions[session_id] = Session(mode, network, optimizer, widths[0])
        log.info("session %s opened: %s, widths %s", session_id[:8], mode, widths)
        return Envelope("ok", [], {"session": session_id}, id=request.id, session=session_id)

    def _drop_idle(self) -> None:
        """Forget sessions whose client went quiet (crashed without closing)."""
        now = time.monotonic()
        for session_id, session in list(self.sessions.items()):
            if now - session.last_used > self.idle_timeout:
                del self.sessions[session_id]
                log.info(
                    "session %s dropped after %.0f s idle", session_id[:8], now - session.last_used
                )

    def _activations(self, session: Session, request: Envelope, index: int = 0) -> torch.Tensor:
        h = request.arrays[index]
        if h.ndim != 2 or h.shape[1] != session.in_features:
            raise ProtocolError(
                f"activations of shape {h.shape}, expected (batch, {session.in_features})"
            )
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
        names = [str(n) for n in request.meta.get("optimizer", [])]
        if len(request.arrays) != len(params) + len(names):
            raise ProtocolError("load: the arrays do not match the weights and optimizer slots")
        with torch.no_grad():
            for p, a in zip(params, request.arrays, strict=False):
                if tuple(a.shape) != tuple(p.shape) or not np.issubdtype(a.dtype, np.floating):
                    raise ProtocolError(f"load: weight of shape {a.shape}, expected {p.shape}")
                p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        if names:
            try:
                load_optimizer_arrays(session.optimizer, names, request.arrays[len(params) :])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ProtocolError(f"load: bad optimizer state: {exc}") from None
        session.pending = None
        return request.reply()

    def _close(self, session: Session, request: Envelope) -> Envelope:
        del self.sessions[request.session]
        log.info("session %s closed after %d steps", request.session[:8], session.steps)
        return request.reply(steps=session.steps)
