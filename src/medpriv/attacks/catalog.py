"""The one list of attacks: names (in the order they run: membership attacks before the audit
that reuses their scores), titles for the report, the membership ROC panels, and which run by
default. The runner registers one function per name; config, report and plots read this list.
Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttackInfo:
    """One attack: its results.json key, report title, and how the report shows it.

    `panel` titles its membership-ROC panel (membership attacks only); `parts` title the
    sub-blocks a block holds (the audit's threat models), keyed `<name>_<part>`; `deployment`
    marks a block only a Flower deployment writes (not an attack `medpriv run` can choose)."""

    name: str
    title: str
    default: bool = True
    membership: bool = False
    panel: str | None = None
    parts: dict[str, str] = field(default_factory=dict)
    deployment: bool = False


CATALOG = (
    AttackInfo(
        "mia_loss",
        "Membership inference — loss threshold",
        membership=True,
        panel="Loss threshold",
    ),
    AttackInfo("mia_lira", "Membership inference — LiRA", membership=True, panel="LiRA"),
    AttackInfo(
        "mia_rmia", "Membership inference — RMIA", default=False, membership=True, panel="RMIA"
    ),
    AttackInfo(
        "audit",
        "Empirical ε audit",
        parts={
            "white_box": "Canary audit — white-box (the mechanism: every noisy update seen)",
            "white_box_runs": (
                "Canary audit — white-box, many runs (the mechanism as recorded, one canary "
                "per run)"
            ),
            "black_box": "Canary audit — black-box (the released model's most exposed patient)",
        },
    ),
    AttackInfo("attribute", "Attribute inference"),
    AttackInfo("fl_inversion", "Gradient inversion of federated updates"),
    AttackInfo("sl_label_leakage", "Split learning — label leakage"),
    AttackInfo("sl_reconstruction", "Split learning — input reconstruction", default=False),
    AttackInfo(
        "mia_sites",
        "Membership exposure measured at the sites (loss threshold, histograms only)",
        default=False,
        deployment=True,
    ),
    AttackInfo(
        "fl_inversion_received",
        "Gradient inversion by the coordinator of an update it received",
        default=False,
        deployment=True,
    ),
)

ATTACK_NAMES = tuple(a.name for a in CATALOG if not a.deployment)
DEFAULT_ATTACKS = tuple(a.name for a in CATALOG if a.default)
MEMBERSHIP_ATTACKS = tuple(a.name for a in CATALOG if a.membership)
MIA_PANELS = tuple((a.name, a.panel) for a in CATALOG if a.panel)
ATTACK_TITLES = {a.name: a.title for a in CATALOG} | {
    f"{a.name}_{part}": title for a in CATALOG for part, title in a.parts.items()
}
