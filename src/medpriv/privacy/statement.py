"""What a model spent and the plain-language privacy statement built from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    noise_multiplier: float | None = None
    steps: int | None = None
    sample_rate: float | None = None
    mechanism: str | None = None
    # Where the noise came from: "csprng" (fresh, never recorded) or "reproducible" (replayable
    # from the run seed: no guarantee); None for a model without noise.
    noise: str | None = None
    caveats: tuple[str, ...] = field(default=())
    # What the guarantee treats as public (e.g. the number of training patients, which sets q),
    # whom it trusts (e.g. the coordinator under client-level DP without SecAgg), and what it
    # does not protect (e.g. validation patients).
    public: tuple[str, ...] = field(default=())
    trusts: tuple[str, ...] = field(default=())
    unprotected: tuple[str, ...] = field(default=())
    # Which neighbouring datasets ε is about: None (the default) = adding or removing one unit's
    # data; "replace" = replacing one unit's data with another's (n public; e.g. objective
    # perturbation, whose proof compares datasets of the same size).
    adjacency: str | None = None

    @property
    def guaranteed(self) -> bool:
        """Private, and its noise cannot be replayed by anyone who reads what medpriv wrote."""
        return self.is_private and self.noise != "reproducible"

    @property
    def is_private(self) -> bool:
        return self.epsilon is not None

    def statement(self) -> str:
        """The guarantee in plain words (or its absence), with its caveats."""
        if not self.is_private:
            text = "Not differentially private: no formal guarantee; measure leakage with attacks."
            return text + (" Note: " + "; ".join(self.caveats) + "." if self.caveats else "")
        delta = f", δ = {self.delta:.2g}" if self.delta else " (pure ε-DP)"
        text = f"ε = {self.epsilon:.3g}{delta} per {self.unit}"
        if self.adjacency == "replace":
            text += f" (replacing one {self.unit}'s data with another's)"
        if self.accountant:
            text += f" ({self.accountant.upper()} accountant)"
        if self.mechanism:
            text += f", {self.mechanism}"
        if self.sample_rate is not None and self.steps is not None:
            text += (
                f", {self.sampling} sampling with q = {self.sample_rate:.3g} "
                f"over {self.steps:,} steps"
            )
        elif not self.sampling.startswith("none"):
            text += f", {self.sampling} sampling"
        if self.noise_multiplier is not None:
            text += f", noise multiplier {self.noise_multiplier:.3g}"
        if self.clipping_norm is not None:
            text += f", per-sample clipping at {self.clipping_norm:g}"
        text += "."
        if self.caveats:
            text += " Caveats: " + "; ".join(self.caveats) + "."
        for label, items in (
            ("Treated as public", self.public),
            ("Trusts", self.trusts),
            ("Not protected", self.unprotected),
        ):
            if items:
                text += f" {label}: " + "; ".join(items) + "."
        if self.noise == "reproducible":
            text = "NO GUARANTEE (reproducible noise): " + text
        return text

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("caveats", "public", "trusts", "unprotected"):
            out[key] = list(getattr(self, key))
        return {**out, "statement": self.statement()}
