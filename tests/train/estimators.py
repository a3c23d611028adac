"""Factories of the kind a hospital team would pass as --model (tests only)."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=20, min_samples_leaf=5)


def pipeline() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500))


def not_a_classifier() -> object:
    return object()


NOT_CALLABLE = 3
