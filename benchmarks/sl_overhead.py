"""Per-step cost of split learning's gRPC transport over the in-process one, on loopback.

The default MLP (features → 128 → 64 → 2) cut after the first hidden layer, batches of 256 rows
of the synthetic cohort's width; each step is the client's forward to the cut, the server's
part (a `medpriv sl server` process on 127.0.0.1 for gRPC, an object in this process for
in-process), and the backward through the client's layers, for vanilla (one round trip) and
U-shaped (two) sessions. Blocks of steps alternate between the transports and the medians are
compared. Prints a summary and, last, one JSON line with `inprocess_ms_per_step`,
`grpc_ms_per_step`, `overhead_ms_per_step` (vanilla) and the U-shaped figures.

    .venv/bin/python benchmarks/sl_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medpriv.config import TrainConfig
from medpriv.processes import Process, wait_until
from medpriv.train.engine.mlp import new_network
from medpriv.train.split.client import RemotePart, SplitNetwork, cut_mlp, part_widths, split_step
from medpriv.train.split.server import make_optimizer
from medpriv.train.split.transport import GrpcTransport, InProcessTransport

SPEC = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0}


def _session(
    transport, *, features: int, ushaped: bool
) -> tuple[SplitNetwork, torch.optim.Optimizer]:
    full, _ = new_network(
        TrainConfig(hidden=(128, 64), dropout=0.0, optimizer="adam", lr=1e-3), features, 0
    )
    bottom, server_part, head = cut_mlp(full, 1, ushaped=ushaped)
    remote = RemotePart(transport)
    remote.open(
        "ushaped" if ushaped else "vanilla",
        part_widths(server_part),
        [p.detach().numpy().copy() for p in server_part.parameters()],
        SPEC,
    )
    network = SplitNetwork(bottom, remote, head)
    return network, make_optimizer(list(network.local_parameters()), SPEC)


def _block(network, optimizer, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        split_step(network, optimizer, x, y)
    return (time.perf_counter() - start) / steps * 1000


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=96)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="steps per block")
    parser.add_argument("--blocks", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(args.batch, args.features)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, size=args.batch))
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(Path(sys.executable).parent / "medpriv"), "sl", "server", "--port", "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        server = Process("sl-server", command, env=env, log=Path(tmp) / "server.log")
        try:
            port = {}

            def ready() -> bool:
                found = re.search(r"listening on 127\.0\.0\.1:(\d+)", server.log())
                if found:
                    port["p"] = int(found.group(1))
                return bool(found)

            wait_until(ready, timeout=60, what="medpriv sl server")
            out: dict[str, float] = {}
            for mode in ("vanilla", "ushaped"):
                pairs = {
                    "inprocess": _session(
                        InProcessTransport(), features=args.features, ushaped=mode == "ushaped"
                    ),
                    "grpc": _session(
                        GrpcTransport(f"127.0.0.1:{port['p']}"),
                        features=args.features,
                        ushaped=mode == "ushaped",
                    ),
                }
                times: dict[str, list[float]] = {k: [] for k in pairs}
                for net, opt in pairs.values():  # warm-up
                    _block(net, opt, x, y, 5)
                for _ in range(args.blocks):
                    for name, (net, opt) in pairs.items():
                        times[name].append(_block(net, opt, x, y, args.steps))
                inproc, grpc_ms = (statistics.median(times[k]) for k in ("inprocess", "grpc"))
                prefix = "" if mode == "vanilla" else "ushaped_"
                out[f"{prefix}inprocess_ms_per_step"] = round(inproc, 3)
                out[f"{prefix}grpc_ms_per_step"] = round(grpc_ms, 3)
                out[f"{prefix}overhead_ms_per_step"] = round(grpc_ms - inproc, 3)
                print(
                    f"{mode:>8}: in-process {inproc:.3f} ms/step, gRPC {grpc_ms:.3f} ms/step, "
                    f"overhead {grpc_ms - inproc:.3f} ms/step (batch {args.batch}, "
                    f"{args.blocks}x{args.steps} steps each)"
                )
                for net, _ in pairs.values():
                    net.remote.close()
                    net.remote.transport.close()
        finally:
            server.stop()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
