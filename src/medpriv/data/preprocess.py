"""Preprocessing fitted on training rows only.

`Preprocessor`: median imputation with missing indicators, standardization, one-hot encoding.
`TableColumns`: the typed feature table, for estimators that bring their own preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medpriv.data.dataset import Schema
from medpriv.errors import DataSchemaError, NotFittedError

MISSING_LEVEL = "<missing>"


@dataclass
class Preprocessor:
    """Turns a feature frame into a float32 matrix. `fit` sees training rows only."""

    schema: Schema

    def fit(self, features: pd.DataFrame) -> Preprocessor:
        numeric = features[list(self.schema.numeric)].apply(pd.to_numeric, errors="coerce")
        medians = numeric.median().fillna(0.0)
        filled = numeric.fillna(medians)
        stds = filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0)
        self.medians_ = medians.to_dict()
        self.means_ = filled.mean().to_dict()
        self.stds_ = stds.to_dict()
        self.indicator_columns_ = [c for c in self.schema.numeric if numeric[c].isna().any()]
        self.categories_ = {
            c: sorted(_as_levels(features[c]).unique().tolist()) for c in self.schema.categorical
        }
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "medians_"):
            raise NotFittedError("Preprocessor.transform called before fit")

    @property
    def feature_names_(self) -> list[str]:
        self._check_fitted()
        names = list(self.schema.numeric)
        names += [f"{c}_missing" for c in self.indicator_columns_]
        names += [f"{c}={level}" for c, levels in self.categories_.items() for level in levels]
        return names

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """The design matrix; unseen categories encode as all zeros."""
        self._check_fitted()
        absent = [c for c in self.schema.columns if c not in features.columns]
        if absent:
            raise DataSchemaError(f"features lack columns the preprocessor was fitted on: {absent}")
        numeric = features[list(self.schema.numeric)].apply(pd.to_numeric, errors="coerce")
        blocks = [
            (
                (numeric.fillna(self.medians_) - pd.Series(self.means_)) / pd.Series(self.stds_)
            ).to_numpy(dtype=np.float32)
        ]
        blocks.append(numeric[self.indicator_columns_].isna().to_numpy(dtype=np.float32))
        for column, levels in self.categories_.items():
            values = _as_levels(features[column]).to_numpy()
            blocks.append(
                (values[:, None] == np.asarray(levels, dtype=object)[None, :]).astype(np.float32)
            )
        return (
            np.concatenate(blocks, axis=1) if blocks else np.zeros((len(features), 0), np.float32)
        )

    def fit_transform(self, features: pd.DataFrame) -> np.ndarray:
        return self.fit(features).transform(features)

    @classmethod
    def from_state(cls, schema: Schema, state: dict) -> Preprocessor:
        """A fitted preprocessor from `state_dict()` output (plain JSON, e.g. sent to clients);
        malformed state is a DataSchemaError."""
        pre = cls(schema)
        try:
            pre.medians_ = {str(k): float(v) for k, v in state["medians"].items()}
            pre.means_ = {str(k): float(v) for k, v in state["means"].items()}
            pre.stds_ = {str(k): float(v) for k, v in state["stds"].items()}
            pre.indicator_columns_ = [str(c) for c in state["indicator_columns"]]
            pre.categories_ = {
                str(c): [str(level) for level in levels]
                for c, levels in state["categories"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataSchemaError(f"malformed preprocessing state: {exc!r}") from None
        expected = (set(schema.numeric), set(schema.categorical))
        if (set(pre.medians_), set(pre.categories_)) != expected:
            raise DataSchemaError(
                "the preprocessing state was fitted on other columns than this dataset's: "
                f"numeric {sorted(pre.medians_)} vs {sorted(schema.numeric)}, categorical "
                f"{sorted(pre.categories_)} vs {sorted(schema.categorical)}"
            )
        return pre

    def state_dict(self) -> dict:
        """Plain JSON-able state, for checkpoints."""
        self._check_fitted()
        return {
            "medians": self.medians_,
            "means": self.means_,
            "stds": self.stds_,
            "indicator_columns": self.indicator_columns_,
            "categories": self.categories_,
        }


def _as_levels(values: pd.Series) -> pd.Series:
    """Categorical values as stripped strings, with missing as its own level."""
    text = values.astype("object").where(values.notna(), MISSING_LEVEL).astype(str).str.strip()
    return text.replace({"": MISSING_LEVEL, "nan": MISSING_LEVEL})


@dataclass
class TableColumns:
    """The feature table itself, for an estimator with its own preprocessing (a Pipeline, or
    gradient-boosted trees with native categorical support): the schema's columns, numerics as
    floats (missing stays NaN), categoricals as pandas categories over the training rows' levels
    (missing and unseen levels become NaN). `fit` sees training rows only."""

    schema: Schema

    def fit(self, features: pd.DataFrame) -> TableColumns:
        self.categories_ = {
            c: sorted(set(_as_levels(features[c]).unique()) - {MISSING_LEVEL})
            for c in self.schema.categorical
        }
        return self

    @property
    def feature_names_(self) -> list[str]:
        if not hasattr(self, "categories_"):
            raise NotFittedError("TableColumns used before fit")
        return list(self.schema.columns)

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        names = self.feature_names_
        absent = [c for c in names if c not in features.columns]
        if absent:
            raise DataSchemaError(f"features lack columns the model was fitted on: {absent}")
        table = features[list(self.schema.numeric)].apply(pd.to_numeric, errors="coerce")
        table = table.astype(np.float64)
        for column, levels in self.categories_.items():
            table[column] = pd.Categorical(_as_levels(features[column]), categories=levels)
        return table[names].reset_index(drop=True)
