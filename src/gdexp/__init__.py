"""gdexp: experiment tracking for gradient descent on linear models."""

__version__ = "0.1.0"
