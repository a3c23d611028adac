"""`medpriv.audit`: `medpriv run` from Python, for a model a hospital team brings to a notebook.

The model (a factory returning an unfitted scikit-learn classifier, an unfitted estimator to
clone for every fit, or `package.module:factory`) runs as the method `model` — the same
splits, utility, membership attacks (reference models are fresh refits), attribute inference,
subgroups and report rows as on the command line, through the same `run_experiment`. The result
is what the command line writes: results.json's document, the report beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medpriv.config import QUICK, load_config
from medpriv.data.dataset import TabularDataset
from medpriv.errors import ConfigError
from medpriv.train.estimator import Factory, template_factory


@dataclass(frozen=True)
class AuditResult:
    """What one audit wrote: `results` is results.json's document, `folder` holds it and the
    reports."""

    results: dict[str, Any]
    folder: Path

    @property
    def report_html(self) -> Path:
        return self.folder / "report.html"

    @property
    def report_md(self) -> Path:
        return self.folder / "report.md"

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.results["runs"])


def model_factory(model: Any) -> tuple[str, Factory | None]:
    """(the name results.json records, the factory object or None when named by a string)."""
    if isinstance(model, str):
        return model, None
    if hasattr(model, "fit") and hasattr(model, "get_params"):  # an unfitted estimator: cloned
        kind = type(model)
        return f"{kind.__module__}:{kind.__qualname__}()", template_factory(model)
    if callable(model):
        module = getattr(model, "__module__", None) or "python"
        return f"{module}:{getattr(model, '__qualname__', type(model).__name__)}", model
    raise ConfigError(
        "model must be a factory (a callable returning an unfitted classifier), an unfitted "
        f"scikit-learn classifier or 'package.module:factory'; got {type(model).__name__}"
    )


def _names(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else ",".join(value)


def audit(
    model: Any = None,
    data: str | TabularDataset = "synthetic",
    *,
    methods: str | Sequence[str] | None = None,
    attacks: str | Sequence[str] | None = None,
    seeds: int = 1,
    out: str | Path = "runs",
    model_input: str = "design",
    quick: bool = False,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> AuditResult:
    """Train, measure and attack `model` (and any `methods` beside it) on `data` — a data spec
    as on the command line (`synthetic`, `csv:FILE`, `mimic3:DIR`) or a `TabularDataset` — and
    write results.json and the reports into a new folder under `out`.

    `methods` defaults to the model alone (`"model"`; name others to compare, e.g.
    `"baseline,dp-sgd@1"`); `attacks` to medpriv's defaults; `config` holds further settings by
    section, as in config.toml (e.g. `{"run": {"shadow_models": 8}}`); `quick` starts from
    `medpriv run --quick`'s smaller budgets.
    """
    from medpriv.experiment import RunPaths, run_experiment
    from medpriv.files import output_folder

    run: dict[str, Any] = {"seeds": seeds, "out": str(out), "progress": False}
    factory = None
    if model is not None:
        run["model"], factory = model_factory(model)
        run["model_input"] = model_input
    if methods is not None:
        run["methods"] = _names(methods)
    elif model is not None:
        run["methods"] = "model"
    if attacks is not None:
        names = _names(attacks)
        run["attacks"] = [] if names.strip() in ("", "none") else names
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (config or {}).items()}
    overrides["run"] = {**overrides.get("run", {}), **run}
    dataset = data if isinstance(data, TabularDataset) else None
    spec = f"python:{data.name}" if dataset is not None else str(data)  # what results.json says
    overrides["data"] = {**overrides.get("data", {}), "spec": spec}
    resolved = load_config(None, overrides, base=QUICK if quick else None)
    paths = RunPaths.new(output_folder(Path(resolved.run.out), option="out"))
    document = run_experiment(resolved, paths=paths, dataset=dataset, model_factory=factory)
    return AuditResult(results=document, folder=paths.root)
