"""gdexp's Hydra plugins: the batched launcher (``hydra/launcher=batched``) and the sweeper that
checks a sweep's jobs without composing each one (``hydra/sweeper=gdexp``, gdexp's default)."""
