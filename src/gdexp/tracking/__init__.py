"""Tracking: everything gdexp writes about a run, to MLflow and to the run's own directory.

- :mod:`~gdexp.tracking.store`: the tracking URI, opening a store, retries, the calls gdexp makes;
- :mod:`~gdexp.tracking.protocol`, :mod:`~gdexp.tracking.writer`, :mod:`~gdexp.tracking.client`:
  the MLflow writer process, the typed operations it serves, and the main process's end of it;
- :mod:`~gdexp.tracking.record`: the on-disk run and sweep records;
- :mod:`~gdexp.tracking.sync`: replaying records into a store that lacks them;
- :mod:`~gdexp.tracking.tags`, :mod:`~gdexp.tracking.loss_curve`: run names, source tags, and the
  ``loss_curve.png`` every run logs.

Deliberately empty: the writer process imports this package and must stay free of Hydra and torch.
"""
