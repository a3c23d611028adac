"""Checkpoints: tensors and JSON metadata, written atomically, loaded without unpickling objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medpriv.errors import CheckpointError
from medpriv.files import write_atomic

FORMAT = "medpriv-checkpoint-1"


def save_checkpoint(path: Path, *, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write `state` (tensors, state dicts) and JSON-able `meta` atomically, readable by the
    owner only (model weights can leak training records)."""
    payload = {**state, "meta": json.dumps({"format": FORMAT, **meta})}
    write_atomic(Path(path), lambda handle: torch.save(payload, handle), mode=0o600)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) from a checkpoint; only tensors and plain containers are accepted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(payload.pop("meta"))
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    return payload, meta


def saved_mechanism(checkpoint: Path | None, resume: bool) -> tuple[float, float] | None:
    """(σ, record δ) of the run being resumed: resuming continues the same mechanism."""
    if not resume or checkpoint is None or not Path(checkpoint).exists():
        return None
    meta = load_checkpoint(checkpoint)[1]
    return float(meta["noise_multiplier"]), float(meta["delta"])
