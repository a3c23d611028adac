"""dp-logreg: pure ε-DP objective perturbation. Each claim its statement makes has a test here
that fails when the claim is false: rows (constant column included) within the bound, no
unregularised intercept, the noise scale of Chaudhuri et al.'s Theorem 9, a refused fit when the
solver does not converge, and mechanism noise from the OS CSPRNG unless replayable noise was
asked for."""

import math
import secrets
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import medpriv.train.dp_logreg as dp_logreg
import medpriv.train.projection as projection
from medpriv.config import DEFAULT_DATA_NORM, DP_LOGREG_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import split_by_unit
from medpriv.errors import PrivacyError
from medpriv.train.base import get_trainer
from medpriv.train.dp_logreg import clip_rows, design_rows, fit_converged, mechanism_epsilon
from tests.conftest import make_toy_dataset


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(800), seed=0)


def _fit(splits, *, seed: int = 0, calibrate: bool = False, **privacy):
    return get_trainer("dp-logreg").fit(
        splits=splits,
        config=TrainConfig(calibrate=calibrate),
        privacy=PrivacyConfig(**privacy),
        seed=seed,
    )


def _weights(model) -> np.ndarray:
    return model.scorer.estimator.coef_.ravel().copy()


@pytest.fixture
def diffprivlib_calls(monkeypatch):
    """Every (estimator, X) diffprivlib's LogisticRegression.fit is given."""
    from diffprivlib.models import LogisticRegression

    calls = []
    original = LogisticRegression.fit

    def spy(self, X, y, sample_weight=None):
        calls.append((self, np.array(X, dtype=np.float64, copy=True)))
        return original(self, X, y, sample_weight)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    return calls


@pytest.fixture
def vector_mechanisms(monkeypatch):
    """Every diffprivlib Vector mechanism built, with the gamma draws (shape, scale) that set its
    noise norm recorded."""
    from diffprivlib.mechanisms import vector

    built = []
    original = vector.Vector.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.recorded = []
        self.rng_type = type(self._rng)
        if isinstance(self._rng, secrets.SystemRandom):
            self._rng = _RecordingSystemRandom(self.recorded)
        built.append(self)

    monkeypatch.setattr(vector.Vector, "__init__", spy)
    return built


class _RecordingSystemRandom(secrets.SystemRandom):
    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log

    def gammavariate(self, alpha, beta):
        self.log.append((alpha, beta))
        return super().gammavariate(alpha, beta)


def test_pure_epsilon_and_a_bound_fixed_in_advance(splits):
    model = _fit(splits, calibrate=True, target_epsilon=2.0)
    p = model.privacy
    assert p.epsilon == 2.0 and p.delta == 0.0 and "pure ε-DP" in p.statement()
    assert model.params["data_norm"] == DEFAULT_DATA_NORM
    assert "fixed in advance, not computed from the data" in p.statement()
    assert (
        "validation records (used, labels included, for preprocessing statistics, the "
        "projection of the design and calibration) are not protected" in p.statement()
    )
    assert "projected onto 4 directions fitted on the validation patients" in p.statement()
    assert model.params["C"] == DP_LOGREG_RECIPE["logreg_c"] and model.params["calibration"]
    fitted_on_val = Preprocessor(splits.val.schema).fit(splits.val.features).state_dict()
    # nothing fitted on training rows (the preprocessing under the projection)
    assert model.preprocessor.preprocessor.state_dict() == fitted_on_val
    # what the statement treats as public, whom it trusts, what it leaves unprotected
    assert p.noise == "csprng" and p.guaranteed
    assert any("number of training patients (520)" in s and "replacing" in s for s in p.public)
    assert any("the machine that trains" in s for s in p.trusts)
    assert any("validation patients" in s for s in p.unprotected)
    assert any("dataset card" in s for s in p.unprotected)
    assert "Treated as public" in p.statement() and "Not protected" in p.statement()
    assert p.adjacency == "replace" and "replacing one patient's data" in p.statement()
    # ... and report.md carries every one of those sentences
    from medpriv.report.markdown import render_markdown

    run = {"name": "dp-logreg eps=2", "utility": {"auroc": 0.8}, "privacy": p.to_dict()}
    markdown = render_markdown({"dataset": {"name": "toy"}, "runs": [run]})
    for sentence in (*p.caveats, *p.public, *p.trusts, *p.unprotected):
        assert sentence in markdown, sentence
    assert "replacing any one patient's data with another's" in markdown


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (7, 5), elements=st.floats(-1e6, 1e6)),
    st.floats(0.01, 100.0),
)
def test_design_rows_are_bounded_with_the_constant_included(x, bound):
    rows = design_rows(x, bound)
    assert rows.shape == (7, 6)
    assert np.all(np.linalg.norm(rows, axis=1) <= bound * (1 + 1e-12))
    assert np.all(rows[:, -1] == dp_logreg.CONSTANT_SHARE * bound)


def test_clip_rows_never_scales_up():
    x = np.random.default_rng(0).normal(size=(50, 4)) * 3
    assert np.all(np.linalg.norm(clip_rows(x, 0.5), axis=1) <= 0.5 + 1e-12)
    small = x[:1] / (10 * np.linalg.norm(x[:1]))
    assert np.allclose(clip_rows(small, 0.5), small)


@pytest.mark.parametrize("data_norm", [None, 0.5])
def test_every_row_given_to_diffprivlib_is_within_the_bound_and_no_intercept_is_fitted(
    splits, diffprivlib_calls, data_norm
):
    model = _fit(splits, data_norm=data_norm)
    bound = data_norm or DEFAULT_DATA_NORM
    assert model.params["data_norm"] == bound
    [(estimator, rows)] = diffprivlib_calls
    # the design projected on PROJECTION_DIMENSIONS directions, then the constant column
    assert rows.shape == (len(splits.train), projection.PROJECTION_DIMENSIONS + 1)
    assert model.params["projection"]["dimensions"] == projection.PROJECTION_DIMENSIONS
    assert np.all(np.linalg.norm(rows, axis=1) <= bound * (1 + 1e-12))  # constant included
    assert np.all(rows[:, -1] == rows[0, -1]) and rows[0, -1] > 0  # the constant column
    assert estimator.data_norm == bound  # diffprivlib's sensitivity is the stated bound
    # no coordinate outside the L2 penalty: diffprivlib fits no intercept of its own
    assert estimator.fit_intercept is False and np.all(estimator.intercept_ == 0)
    assert estimator.coef_.shape[1] == rows.shape[1]
    assert ("public knowledge" if data_norm else "fixed in advance") in model.privacy.statement()
    # the scorer transforms rows exactly as the fit did
    x = model.preprocessor.transform(splits.train.features)
    assert np.allclose(model.scorer.margin(x), rows @ estimator.coef_.ravel())


def test_the_projection_is_fitted_on_validation_patients_only(splits, monkeypatch):
    """Training records never shape the projection: it is the same whatever their labels, and
    it is fitted on exactly the validation patients' design and labels."""
    seen = []
    fit = dp_logreg.ValidationProjection.fit.__func__

    def spy(cls, x_val, y_val, dimensions=None):
        seen.append((np.array(x_val), np.array(y_val)))
        return fit(cls, x_val, y_val, dimensions)

    monkeypatch.setattr(dp_logreg.ValidationProjection, "fit", classmethod(spy))
    _fit(splits, target_epsilon=1.0)
    flipped = dict(splits.parts)
    flipped["train"] = replace(splits.train, labels=1 - splits.train.labels)
    _fit(type(splits)(parts=flipped, seed=splits.seed), target_epsilon=1.0)
    (x_first, y_first), (x_second, y_second) = seen
    expected = Preprocessor(splits.val.schema).fit(splits.val.features)
    np.testing.assert_array_equal(x_first, expected.transform(splits.val.features))
    np.testing.assert_array_equal(y_first, splits.val.labels)
    np.testing.assert_array_equal(x_first, x_second)
    np.testing.assert_array_equal(y_first, y_second)


def test_noise_scale_follows_chaudhuri_et_al_with_the_squared_row_bound(splits, vector_mechanisms):
    """Theorem 9 for rows of norm ≤ R: ε' = ε − 2·log(1 + c·R²·C), noise norm ~ Γ(d, 2R/ε')."""
    c_inv = 0.5  # a large C makes R² against R matter
    model = get_trainer("dp-logreg").fit(
        splits=splits,
        config=TrainConfig(logreg_c=c_inv, calibrate=False),
        privacy=PrivacyConfig(target_epsilon=4.0, data_norm=3.0),
    )
    [mechanism] = vector_mechanisms
    assert mechanism.rng_type is secrets.SystemRandom
    dimension = model.scorer.estimator.coef_.shape[1]
    assert mechanism.dimension == dimension
    epsilon_prime = 4.0 - 2 * math.log1p(0.25 * 3.0**2 * c_inv)
    shapes, scales = zip(*mechanism.recorded, strict=True)
    assert sum(shapes) == pytest.approx(dimension)  # four Γ(d/4) draws: one Γ(d)
    assert all(s == pytest.approx(2 * 3.0 / epsilon_prime, rel=1e-9) for s in scales)
    assert all(s >= 2 * 3.0 / epsilon_prime for s in scales)  # never less noise


def test_an_epsilon_the_curvature_term_would_eat_is_refused():
    with pytest.raises(PrivacyError, match=r"lower train\.logreg_c or privacy\.data_norm"):
        mechanism_epsilon(0.01, data_norm=10.0, c=1.0)


def test_a_fit_that_does_not_converge_is_refused(splits, monkeypatch):
    monkeypatch.setattr(dp_logreg, "MAX_ITER", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice is acted on, not passed on
        with pytest.raises(PrivacyError, match=r"did not converge.*no ε can be reported"):
            _fit(splits)


def test_convergence_needs_no_warning_and_iterations_to_spare():
    from sklearn.exceptions import ConvergenceWarning

    class Fitted:
        max_iter = 10
        n_iter_ = np.array([10])

    assert not fit_converged(Fitted(), [])  # stopped at the limit, warning or not
    Fitted.n_iter_ = np.array([4])
    assert fit_converged(Fitted(), [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("lbfgs failed to converge", ConvergenceWarning, stacklevel=1)
    assert not fit_converged(Fitted(), caught)


def test_mechanism_noise_is_fresh_unless_reproducible_noise_is_asked_for(splits, vector_mechanisms):
    first, second = _weights(_fit(splits, seed=0)), _weights(_fit(splits, seed=0))
    assert not np.allclose(first, second)  # the same seed does not replay the noise
    assert all(m.rng_type is secrets.SystemRandom for m in vector_mechanisms)
    replay = _fit(splits, seed=0, reproducible_noise=True)
    assert np.array_equal(_weights(replay), _weights(_fit(splits, seed=0, reproducible_noise=True)))
    assert not np.allclose(
        _weights(replay), _weights(_fit(splits, seed=1, reproducible_noise=True))
    )
    assert replay.privacy.noise == "reproducible" and not replay.privacy.guaranteed
    assert replay.privacy.statement().startswith("NO GUARANTEE")
    assert replay.params["noise_source"] == "reproducible"


def test_noise_shrinks_with_epsilon(splits):
    def spread(eps: float) -> float:
        fits = [_weights(_fit(splits, seed=s, target_epsilon=eps)) for s in range(5)]
        return float(np.std(fits, axis=0).mean())

    assert spread(20.0) < spread(0.2)


def test_budget_and_group_privacy():
    trainer = get_trainer("dp-logreg")
    splits = split_by_unit(make_toy_dataset(600, records_per_unit=2), seed=0)
    with pytest.raises(PrivacyError, match="over the budget"):
        trainer.fit(
            splits=splits,
            config=TrainConfig(),
            privacy=PrivacyConfig(target_epsilon=2.0, budget=1.0),
        )
    grouped = trainer.fit(
        splits=splits,
        config=TrainConfig(),
        privacy=PrivacyConfig(target_epsilon=2.0, unit_policy="group"),
    )
    assert grouped.params["group_size"] == 2 and grouped.params["record_epsilon"] == 1.0
    assert grouped.privacy.epsilon == 2.0 and "group privacy over 2" in grouped.privacy.statement()


def test_another_diffprivlib_is_refused(monkeypatch):
    import diffprivlib

    monkeypatch.setattr(diffprivlib, "__version__", "0.7.0")
    with pytest.raises(PrivacyError, match="re-check mechanism_epsilon"):
        dp_logreg.check_diffprivlib()
