"""Sweeps: what happens to a multirun as a whole.

- :mod:`~gdexp.sweeps.overrides`: a job's overrides, split into composed ones and per-run values;
- :mod:`~gdexp.sweeps.callback`: the check of every sweep value and the sweep's parent run;
- :mod:`~gdexp.sweeps.plan`, :mod:`~gdexp.sweeps.batched`: the batched launcher's logic.

(Named ``sweeps`` because ``gdexp.sweep`` is the notebook function of the contract.)
"""
