"""gdexp: experiment tracking for gradient descent on linear models.

From Python and Jupyter: ``gdexp.train(...)`` trains one run, ``gdexp.sweep(...)`` a grid; a bad
value raises ``gdexp.ConfigError`` (see :mod:`gdexp.api`). They are imported on first use, so that
``import gdexp`` (and every command, which imports it first) stays cheap.
"""

from __future__ import annotations

import warnings
from typing import Any

# MLflow imports tqdm.auto, which in a Jupyter kernel without ipywidgets warns that it will draw
# its bars as text ("TqdmWarning: IProgress not found"): a notebook's first gdexp cell would show
# that. Text bars are what gdexp wants there; only that one warning is silenced.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
__all__ = ["ConfigError", "Run", "sweep", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gdexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'gdexp' has no attribute {name!r}")
