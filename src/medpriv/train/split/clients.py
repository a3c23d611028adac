"""Several hospitals against one split-learning server.

* In turn (round-robin, Gupta & Raskar 2018): each epoch the clients train one after another on
  their own rows, handing the client layers (and their optimizer state) on to the next.
* SplitFed (Thapa et al. 2022): the clients train in parallel — their batches interleave at the
  server, each on its own copy of the client layers with its own optimizer — and at the end of
  every epoch the copies are averaged by record count (FedAvg) and handed back; each client's
  optimizer starts afresh, as a FedAvg client's does. The server keeps one part that every
  client's batches update in turn (the server of SplitFed's V2).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medpriv.train.loop import BatchSampler
from medpriv.train.split.client import SplitNetwork, split_step
from medpriv.train.split.server import make_optimizer


@dataclass
class Cursor:
    """Which client the batch just handed out belongs to (set by the sampler)."""

    client: int = 0


def client_batches(
    groups: Sequence[np.ndarray], batch_size: int, *, interleave: bool, cursor: Cursor
) -> BatchSampler:
    """Each epoch, every client's rows shuffled (torch's RNG) and cut into batches, handed out
    client after client or, with `interleave`, one batch of each client in turn."""
    tensors = [torch.from_numpy(np.asarray(g, dtype=np.int64)) for g in groups]

    def batches(n: int) -> Iterator[torch.Tensor]:
        chunks = []
        for rows in tensors:
            order = rows[torch.randperm(len(rows))]
            chunks.append([order[i : i + batch_size] for i in range(0, len(order), batch_size)])
        if interleave:
            schedule = [
                (c, i)
                for i in range(max(len(parts) for parts in chunks))
                for c in range(len(chunks))
                if i < len(chunks[c])
            ]
        else:
            schedule = [(c, i) for c in range(len(chunks)) for i in range(len(chunks[c]))]
        for c, i in schedule:
            cursor.client = c
            yield chunks[c][i]

    return batches


class SplitFedClients:
    """The clients' copies of the client layers, their optimizers, and the epoch's average."""

    def __init__(
        self,
        network: SplitNetwork,
        sizes: Sequence[int],
        optimizer_spec: dict[str, Any],
        cursor: Cursor,
    ) -> None:
        self.network, self.cursor, self.spec = network, cursor, optimizer_spec
        self.shared = network.bottom
        self.weights = np.asarray(sizes, dtype=np.float64) / float(sum(sizes))
        self.copies = [copy.deepcopy(self.shared) for _ in sizes]
        self.optimizers = [make_optimizer(c.parameters(), optimizer_spec) for c in self.copies]
        self.synced = False  # copies equal the shared layers (not yet after a resume)

    def step(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        """The batch on its own client's copy (the loop's `optimizer` is not used)."""
        if not self.synced:
            self._hand_back()
        c = self.cursor.client
        self.network.bottom = self.copies[c]
        try:
            return split_step(self.network, self.optimizers[c], x, y)
        finally:
            self.network.bottom = self.shared

    @torch.no_grad()
    def average(self) -> None:
        """FedAvg of the copies into the shared layers; every client restarts from them."""
        for i, shared in enumerate(self.shared.parameters()):
            stacked = torch.stack([list(c.parameters())[i] for c in self.copies])
            weights = torch.from_numpy(self.weights).to(stacked.dtype)
            shared.copy_(torch.tensordot(weights, stacked, dims=1))
        self._hand_back()

    def _hand_back(self) -> None:
        for c in self.copies:
            c.load_state_dict(self.shared.state_dict())
        self.optimizers = [make_optimizer(c.parameters(), self.spec) for c in self.copies]
        self.synced = True
