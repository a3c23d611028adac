"""The client side of split learning: the layers below the cut (and, U-shaped, the head), the
server's part seen through requests, and the training step the shared loop calls.

Cut `k` means the client keeps the first k hidden layers (Linear + ReLU each) of the MLP; the
server holds the rest — all of it in vanilla mode, all but the output layer in U-shaped mode.
The full MLP is initialized exactly as the baseline's (same seed), and the server's part starts
from those weights, so vanilla split learning reproduces centralized training of the same MLP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.errors import ConfigError, ProtocolError
from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.split.protocol import MAX_MESSAGE_BYTES, Envelope, decode, encode
from medpriv.train.split.transport import Transport


@dataclass
class Traffic:
    """What crossed the wire, counted by the client."""

    bytes_sent: int = 0
    bytes_received: int = 0
    round_trips: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "round_trips": self.round_trips,
            "round_trips_by_op": dict(sorted(self.by_op.items())),
        }


class RemotePart:
    """The server's part of the network for one session; every method is one request."""

    def __init__(
        self, transport: Transport, *, token: str = "", max_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        self.transport, self.token, self.max_bytes = transport, token, max_bytes
        self.session, self.seq, self.next_id = "", 0, 0
        self.max_rows = 1
        self.traffic = Traffic()

    def request(self, op: str, arrays: list[np.ndarray] | None = None, **meta: Any) -> Envelope:
        self.next_id += 1
        self.seq = 0 if op == "open" else self.seq + 1
        data = encode(
            Envelope(
                op,
                list(arrays or []),
                meta,
                id=self.next_id,
                session=self.session,
                seq=self.seq,
                token=self.token,
            ),
            max_bytes=self.max_bytes,
        )
        raw = self.transport.call(data, token=self.token)
        self.traffic.bytes_sent += len(data)
        self.traffic.bytes_received += len(raw)
        self.traffic.round_trips += 1
        self.traffic.by_op[op] = self.traffic.by_op.get(op, 0) + 1
        reply = decode(raw, max_bytes=self.max_bytes)
        if reply.op == "error":
            raise ProtocolError(f"split server refused {op}: {reply.meta.get('error')}")
        if reply.id != self.next_id:
            raise ProtocolError(f"reply to request {reply.id}, expected {self.next_id}")
        return reply

    def open(
        self, mode: str, widths: list[int], weights: list[np.ndarray], optimizer: dict[str, Any]
    ) -> None:
        reply = self.request("open", weights, mode=mode, widths=widths, optimizer=optimizer)
        session, rows = reply.meta.get("session"), reply.meta.get("max_rows")
        if not isinstance(session, str) or not session:
            raise ProtocolError("the split server's reply to open names no session")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise ProtocolError("the split server's reply to open lacks 'max_rows'")
        self.session, self.max_rows = session, rows

    def train(self, h: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reply = self.request("train", [h, y])
        return reply.arrays[0], reply.arrays[1]

    def forward(self, h: np.ndarray) -> np.ndarray:
        return self.request("forward", [h]).arrays[0]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self.request("backward", [grad]).arrays[0]

    def infer(self, h: np.ndarray) -> np.ndarray:
        """The server part's output, in requests of at most the rows the server takes."""
        rows = self.max_rows
        if len(h) <= rows:
            return self.request("infer", [h]).arrays[0]
        parts = [self.request("infer", [h[i : i + rows]]).arrays[0] for i in range(0, len(h), rows)]
        return np.concatenate(parts)

    def state(self) -> tuple[list[np.ndarray], list[str], list[np.ndarray]]:
        """(weights, optimizer slot names, optimizer slots)."""
        reply = self.request("state")
        n = int(reply.meta["weights"])
        return reply.arrays[:n], list(reply.meta["optimizer"]), reply.arrays[n:]

    def load(self, weights: list[np.ndarray], names: list[str], slots: list[np.ndarray]) -> None:
        self.request("load", [*weights, *slots], optimizer=names)

    def close(self) -> None:
        if self.session:
            self.request("close")
            self.session = ""


def cut_mlp(
    network: MLP, cut: int, *, ushaped: bool
) -> tuple[nn.Sequential, nn.Sequential, nn.Module | None]:
    """(client bottom, server part, client head or None) of an MLP without dropout."""
    hidden = len(network.hidden)
    if any(isinstance(m, nn.Dropout) for m in network):
        raise ConfigError("split learning uses an MLP without dropout")
    if not 1 <= cut <= hidden - (1 if ushaped else 0):
        most = hidden - (1 if ushaped else 0)
        raise ConfigError(
            f"--cut must be between 1 and {most} for {hidden} hidden layers"
            + (" (U-shaped: the server needs at least one hidden layer)" if ushaped else "")
        )
    layers = list(network)
    bottom = nn.Sequential(*layers[: 2 * cut])
    if ushaped:
        return bottom, nn.Sequential(*layers[2 * cut : -1]), layers[-1]
    return bottom, nn.Sequential(*layers[2 * cut :]), None


def part_widths(part: nn.Sequential) -> list[int]:
    linears = [m for m in part if isinstance(m, nn.Linear)]
    return [linears[0].in_features, *(m.out_features for m in linears)]


class SplitNetwork(nn.Module):
    """The split model as the shared loop sees it: `forward` is inference through the server
    (the loop validates with it); `state_dict` / `load_state_dict` include the server's part and
    its optimizer state under 'server.*' (so best-epoch tracking and checkpoints cover both)."""

    def __init__(
        self,
        bottom: nn.Sequential,
        remote: RemotePart,
        head: nn.Module | None,
        *,
        noise: float = 0.0,
        gradient_noise: float = 0.0,
        nopeek: float = 0.0,
        keep_rows: int = 0,
        noise_source: NoiseSource | None = None,
    ) -> None:
        super().__init__()
        self.bottom, self.head = bottom, head
        self.remote = remote
        self.noise, self.gradient_noise, self.nopeek = noise, gradient_noise, nopeek
        # The defenses' noise (activations, gradients) comes from the privacy core's source.
        self.noise_source = noise_source or NoiseSource.fresh()
        # The last `keep_rows` gradient rows the server received, with their labels: what an
        # honest-but-curious server holds for the label-leakage attack.
        self.keep_rows = keep_rows
        self.observed: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def ushaped(self) -> bool:
        return self.head is not None

    def smashed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the cut-layer activations as sent — with the Gaussian-noise defense in training —,
        the NoPeek penalty α·dCor(x, activations) the client adds to its loss, or None)."""
        h = self.bottom(x)
        penalty = self.nopeek * distance_correlation(x, h) if self.nopeek > 0 else None
        return (self.with_activation_noise(h) if self.training else h), penalty

    def with_activation_noise(self, h: torch.Tensor) -> torch.Tensor:
        """The activations as sent in training: + N(0, noise²) (the Gaussian-noise defense)."""
        if self.noise <= 0:
            return h
        return h + self.noise_source.gaussian(h.shape, self.noise, like=h)

    def with_gradient_noise(self, grad_z: torch.Tensor) -> torch.Tensor:
        """U-shaped: the gradient rows sent back to the server, + Gaussian noise relative to the
        batch's mean row norm (the defense against label leakage)."""
        if self.gradient_noise <= 0:
            return grad_z
        scale = self.gradient_noise * float(grad_z.norm(dim=1).mean())
        return grad_z + self.noise_source.gaussian(grad_z.shape, scale, like=grad_z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = torch.from_numpy(self.remote.infer(self.bottom(x).numpy()))
            return self.head(z) if self.head is not None else z

    def observe(self, gradients: np.ndarray, labels: np.ndarray) -> None:
        """Keep the gradient rows sent to the server (scaled back from the batch mean)."""
        if self.keep_rows <= 0:
            return
        self.observed.append((gradients * len(gradients), labels.copy()))
        while sum(len(g) for g, _ in self.observed) - len(self.observed[0][0]) >= self.keep_rows:
            self.observed.pop(0)

    def observed_gradients(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.observed:
            return None
        return (
            np.concatenate([g for g, _ in self.observed]),
            np.concatenate([y for _, y in self.observed]),
        )

    def local_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.bottom.parameters()
        if self.head is not None:
            yield from self.head.parameters()

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        state = super().state_dict(*args, **kwargs)
        weights, names, slots = self.remote.state()
        state.update({f"server.w{i}": torch.from_numpy(w) for i, w in enumerate(weights)})
        state.update(
            {f"server.opt.{n}": torch.from_numpy(s) for n, s in zip(names, slots, strict=True)}
        )
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):  # type: ignore[override]
        local = {k: v for k, v in state_dict.items() if not k.startswith("server.")}
        n = len([k for k in state_dict if k.startswith("server.w")])
        weights = [state_dict[f"server.w{i}"].numpy() for i in range(n)]
        names = [k[len("server.opt.") :] for k in state_dict if k.startswith("server.opt.")]
        slots = [state_dict[f"server.opt.{name}"].numpy() for name in names]
        self.remote.load(weights, names, slots)
        return super().load_state_dict(local, strict=strict, assign=assign)


def split_step(
    network: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """One batch: the client's forward to the cut, the server's part over the wire, the
    gradient back through the client's layers; both sides step. Returns the batch logits."""
    assert isinstance(network, SplitNetwork)
    optimizer.zero_grad(set_to_none=True)
    h, penalty = network.smashed(x)
    sent = h.detach().numpy()

    def client_backward(grad_h: np.ndarray) -> None:
        if penalty is None:
            h.backward(torch.from_numpy(grad_h))
        else:
            torch.autograd.backward([h, penalty], [torch.from_numpy(grad_h), None])

    if not network.ushaped:
        grad_h, logits = network.remote.train(sent, y.numpy())
        client_backward(grad_h)
        optimizer.step()
        return torch.from_numpy(logits)
    z = torch.from_numpy(network.remote.forward(sent)).requires_grad_(True)
    logits = network.head(z)
    F.cross_entropy(logits, y).backward()
    sent_grad = network.with_gradient_noise(z.grad).numpy()
    network.observe(sent_grad, y.numpy())
    client_backward(network.remote.backward(sent_grad))
    optimizer.step()
    return logits.detach()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation of two batches (Székely et al. 2007), differentiable; NoPeek's
    penalty (Vepakomma et al. 2020). 0 for independent, 1 for (scaled) identical rows."""

    def centered(v: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(v, v)
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centered(x.detach()), centered(z)
    dcov_xz, dcov_xx, dcov_zz = (a * b).mean(), (a * a).mean(), (b * b).mean()
    denominator = torch.sqrt(dcov_xx * dcov_zz)
    if float(denominator.detach()) <= 0:
        return z.sum() * 0.0
    return torch.sqrt(torch.clamp(dcov_xz / denominator, min=1e-12))


def compose(network: SplitNetwork, in_features: int, hidden: tuple[int, ...]) -> MLP:
    """The whole model as one local MLP (the server's current weights fetched once)."""
    weights, _, _ = network.remote.state()
    full = MLP(in_features, hidden)
    tensors = [p.detach() for p in network.bottom.parameters()]
    tensors += [torch.from_numpy(w) for w in weights]
    if network.head is not None:
        tensors += [p.detach() for p in network.head.parameters()]
    with torch.no_grad():
        for p, t in zip(full.parameters(), tensors, strict=True):
            p.copy_(t)
    return full.eval()
