"""The one error type a user is shown as a single line.

Kept free of imports so that every layer, the MLflow writer process included (which imports
neither Hydra nor torch), can raise it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable tracking store: one line (``key=value: problem; allowed: ...``),
    reported before any training, exit status 2."""
