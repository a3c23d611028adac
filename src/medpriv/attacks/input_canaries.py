"""The black-box canary audit: how much a released model exposes about its most unusual patient.

The audit trains its OWN copy of the model — same method, recipe, data, privacy settings and
seed — on the training patients plus m crafted canary records, each its own privacy unit and
included with probability ½ by coins from the CSPRNG that only the auditor knows. The released
model never sees a canary. A canary is an outlier: random values across each numeric column's
observed range with a third of the columns at the column's minimum or maximum, a uniformly drawn
category in every categorical column (rare ones as often as common ones), and a label drawn by a
fair coin, so a model can only predict it from having seen it. Of `CANDIDATES` times m such
records the audit keeps the m on which the released model is most undecided (margin nearest 0):
there a single record can tip the prediction either way. The released model never saw a canary
and is independent of the coins, so choosing with it keeps the bound valid.

Score (black-box: the adversary queries scores on chosen records): how much more the audit
model believes the canary's own label than the released model does — log-odds of the label
under the canary run minus under the released model (a reference that never saw any canary and
is independent of the coins, as difficulty calibration in LiRA/RMIA). The one-run bound of
Steinke, Nasr & Jagielski (2023) turns the scores into ε̂ — the worst-case-patient ε the model
demonstrably leaks — valid whatever the method (private or not).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from medpriv.attacks.mia import logit_confidence
from medpriv.data.dataset import TabularDataset, concat
from medpriv.privacy.audit.one_run import audit_one_run
from medpriv.privacy.randomness import NoiseSource

MIN_CANARIES, MAX_CANARIES = 100, 500
CANARY_SHARE = 0.1  # canaries per training unit: about one record in twenty is an included one
MAX_CANARY_FRACTION = 4  # at most one canary per four training units (small tables)
EXTREME_SHARE = 1 / 3  # share of numeric columns a canary sets to the column's min or max
CANDIDATES = 4  # records crafted per canary kept
CANARY_PREFIX = "medpriv-canary-"
THREAT_MODEL = (
    "black-box: the adversary queries the released model's scores on records of its choice and "
    "knows every other record; canaries are crafted outlier records with a random label"
)


def input_canary_count(train_units: int) -> int:
    """m from public quantities: a tenth of the training units, between 100 and 500, and never
    more than a quarter of them (at least 2), so that on a small table the audit run stays a run
    on the patients with a few canaries, not a run on canaries (its power says what that costs)."""
    share = min(MAX_CANARIES, max(MIN_CANARIES, int(CANARY_SHARE * train_units)))
    return min(share, max(2, train_units // MAX_CANARY_FRACTION))


def craft_input_canaries(
    train: TabularDataset,
    m: int,
    *,
    seed: int,
    unit_ids: np.ndarray | None = None,
    released: Any | None = None,
) -> TabularDataset:
    """m outlier records with fair-coin labels, each its own unit (`unit_ids`, ids no patient
    has; by default text ids with a prefix no patient id should carry); with `released`, the m
    of `CANDIDATES`·m on which that model is most undecided.

    Positions follow `seed` (the auditor's design, public); inclusion is decided elsewhere by
    coins nobody can replay.
    """
    if released is not None:
        pool = craft_input_canaries(train, CANDIDATES * m, seed=seed)
        keep = np.sort(np.argsort(np.abs(released.margin(pool)), kind="stable")[:m])
        return replace(pool.subset(keep), unit_ids=_canary_ids(m, unit_ids))
    if m < 2:
        raise ValueError("an audit needs at least 2 canaries")
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    numeric = train.schema.numeric
    n_extreme = max(1, round(EXTREME_SHARE * len(numeric))) if numeric else 0
    extreme = np.zeros((m, len(numeric)), bool)
    for row in extreme:
        row[rng.choice(len(numeric), size=n_extreme, replace=False)] = True
    for j, name in enumerate(numeric):
        values = pd.to_numeric(train.features[name], errors="coerce").to_numpy(np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        column = rng.uniform(low, high, size=m)
        ends = np.where(rng.random(m) < 0.5, low, high)
        columns[name] = np.where(extreme[:, j], ends, column)
    for name in train.schema.categorical:
        observed = pd.unique(train.features[name].dropna())
        columns[name] = (
            rng.choice(observed, size=m) if observed.size else np.full(m, None, dtype=object)
        )
    features = pd.DataFrame(columns)[list(train.schema.columns)]
    for name in train.schema.columns:  # keep each column's dtype family (categoricals stay text)
        if name in train.schema.categorical:
            features[name] = features[name].astype(train.features[name].dtype, errors="ignore")
    sites = None
    if train.site_ids is not None:
        sites = rng.choice(pd.unique(train.site_ids), size=m)
    return TabularDataset(
        name=train.name,
        features=features,
        labels=rng.integers(0, 2, size=m),
        unit_ids=_canary_ids(m, unit_ids),
        schema=train.schema,
        site_ids=sites,
        unit_name=train.unit_name,
        label_name=train.label_name,
    )


def _canary_ids(m: int, unit_ids: np.ndarray | None) -> np.ndarray:
    if unit_ids is None:
        return np.array([f"{CANARY_PREFIX}{i}" for i in range(m)], dtype=object)
    if len(unit_ids) != m:
        raise ValueError(f"need {m} canary ids, got {len(unit_ids)}")
    return np.asarray(unit_ids)


def fresh_unit_ids(splits: Any, m: int) -> np.ndarray:
    """m unit ids that no patient in any split has, of the patients' id type (numbers after the
    largest id; text ids with `CANARY_PREFIX`)."""
    ids = np.concatenate([np.asarray(part.unit_ids) for part in splits.parts.values()])
    if ids.dtype.kind in "iu":
        return np.arange(m, dtype=ids.dtype) + (ids.max() + 1 if ids.size else 0)
    if ids.dtype.kind == "f":
        return np.arange(m, dtype=ids.dtype) + (np.nanmax(ids) + 1 if ids.size else 0)
    text = np.array([f"{CANARY_PREFIX}{i}" for i in range(m)], dtype=object)
    if np.isin(text, ids.astype(str)).any():
        raise ValueError(f"a patient id starts with {CANARY_PREFIX!r}; rename it")
    return text.astype(ids.dtype) if ids.dtype.kind == "U" else text


def with_canaries(
    train: TabularDataset, canaries: TabularDataset, included: np.ndarray
) -> TabularDataset:
    """The audit run's training set: every patient plus the included canaries."""
    if np.isin(canaries.unit_ids, train.unit_ids).any():
        raise ValueError("a canary id collides with a patient id")
    return concat([train, canaries.subset(np.flatnonzero(included))])


def canary_scores(audit_model: Any, released_model: Any, canaries: TabularDataset) -> np.ndarray:
    """Log-odds of each canary's own label under the audit run minus under the released model."""
    labels = canaries.labels
    return logit_confidence(audit_model.margin(canaries), labels) - logit_confidence(
        released_model.margin(canaries), labels
    )


def black_box_audit(
    trainer: Any,
    released: Any,
    *,
    splits: Any,
    config: Any,
    privacy: Any,
    seed: int,
    canaries: int | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The black-box block: ε̂ for the most exposed (canary) patient, its power and verdict."""
    from medpriv.attacks.canary_audit import threat_model_block

    m = canaries or input_canary_count(splits.train.n_units)
    crafted = craft_input_canaries(
        splits.train, m, seed=seed + 7_919, unit_ids=fresh_unit_ids(splits, m), released=released
    )
    included = NoiseSource.fresh().bernoulli_np(m, 0.5).astype(bool)
    train = with_canaries(splits.train, crafted, included)
    audited = trainer.fit(
        splits=replace(splits, parts={**splits.parts, "train": train}),
        config=config,
        privacy=privacy,
        seed=seed,
    )
    scores = canary_scores(audited, released, crafted)
    delta = float(audited.privacy.delta or 0.0)
    return threat_model_block(
        audit_one_run(scores, included, delta=delta, confidence=confidence),
        claimed=audited.privacy.epsilon,
        threat_model=THREAT_MODEL,
        included=included,
        score="log-odds of the canary's label, audit run minus released model",
    )
