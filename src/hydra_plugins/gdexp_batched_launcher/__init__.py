"""gdexp's batched launcher for Hydra: ``python -m gdexp.run -m hydra/launcher=batched ...``."""
