"""Which torch device does the work: `auto` (a CUDA GPU when torch sees one, else the CPU),
`cpu`, or `cuda` (an error naming the fix when there is none). CPU always works."""

from __future__ import annotations

import torch

from medpriv.config import DEVICES
from medpriv.errors import ConfigError

__all__ = ["DEVICES", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a `--device` choice."""
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU here; use --device auto or cpu")
    return torch.device("cuda")
