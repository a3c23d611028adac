"""Factories of the kind a hospital team would pass as --model (tests only)."""

from __future__ import annotations

from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=20, min_samples_leaf=5)


def pipeline() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500))


def table_pipeline() -> Pipeline:
    """Its own preprocessing of the feature table (`--model-input table`)."""
    columns = make_column_transformer(
        (
            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
            make_column_selector(dtype_include="number"),
        ),
        (
            make_pipeline(
                SimpleImputer(strategy="constant", fill_value="missing"),
                OneHotEncoder(handle_unknown="ignore"),
            ),
            make_column_selector(dtype_include="category"),
        ),
    )
    return make_pipeline(columns, LogisticRegression(max_iter=500))


def not_a_classifier() -> object:
    return object()


NOT_CALLABLE = 3
