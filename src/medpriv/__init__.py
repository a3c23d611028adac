"""medpriv: private clinical prediction models, and measurements of how much they leak.

From Python: `medpriv.DPSGDClassifier`, `medpriv.DPLogisticRegression` (scikit-learn
classifiers, `medpriv.classifiers`) and `medpriv.audit` (`medpriv run` on a model you bring,
`medpriv.model_audit`). They are imported on first use, so `import medpriv` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DPSGDClassifier": "medpriv.classifiers",
    "DPLogisticRegression": "medpriv.classifiers",
    "audit": "medpriv.model_audit",
    "AuditResult": "medpriv.model_audit",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'medpriv' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
