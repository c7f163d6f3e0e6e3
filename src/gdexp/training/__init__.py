"""Training: data -> model -> engine -> history, and the closed-form view of the result.

No MLflow here, and no Hydra runtime: each function takes a composed config or plain values.

- :mod:`~gdexp.training.data`: the datasets, one registered loader each;
- :mod:`~gdexp.training.model`, :mod:`~gdexp.training.module`: ``nn.Linear`` with MSE, its LightningModule;
- :mod:`~gdexp.training.engines`: the three training loops (lightning, autograd, numpy);
- :mod:`~gdexp.training.population`: many runs of one problem as one tensor program;
- :mod:`~gdexp.training.history`: what a run saw, epoch by epoch;
- :mod:`~gdexp.training.analysis`, :mod:`~gdexp.training.metrics`: optimum, stability bound,
  predictions, and the registered summary metrics.
"""
