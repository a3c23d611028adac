"""What a model spent of privacy, and the statement that goes with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PrivacySpent:
    """ε, δ and how they were earned; `epsilon=None` means the model is not private."""

    epsilon: float | None = None
    delta: float | None = None
    accountant: str | None = None
    sampling: str = "shuffle"
    unit: str = "patient"
    level: str | None = None
    clipping_norm: float | None = None

    @property
    def is_private(self) -> bool:
        return self.epsilon is not None

    def statement(self) -> str:
        """One human-readable sentence stating the guarantee (or its absence)."""
        if not self.is_private:
            return "Not differentially private: no formal guarantee; measure leakage with attacks."
        delta = f", δ = {self.delta:.2g}" if self.delta else " (pure ε-DP)"
        parts = [
            f"({self.epsilon:.3g}{delta})-differential privacy at the {self.level or 'sample'} "
            f"level, privacy unit = {self.unit}"
        ]
        if self.accountant:
            parts.append(f"accountant {self.accountant}")
        parts.append(f"{self.sampling} sampling")
        if self.clipping_norm is not None:
            parts.append(f"clipping norm {self.clipping_norm:g}")
        return "; ".join(parts) + "."

    def to_dict(self) -> dict:
        return {**asdict(self), "statement": self.statement()}
