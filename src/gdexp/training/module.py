"""The LightningModule of ``engine=lightning``: ``nn.Linear`` + MSE, recording into a History.

Its own module because importing Lightning takes seconds: the autograd and numpy engines, and
everything that only inspects runs, never pay for it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from gdexp.training.history import History
from gdexp.training.model import losses, param_row


class LinearRegression(pl.LightningModule):
    """``nn.Linear`` + MSE for a Lightning Trainer, recording into a :class:`History`."""

    def __init__(self, linear: nn.Linear, make_optimizer: Callable, reduction: str, history: History):
        super().__init__()
        self.linear = linear
        self.make_optimizer = make_optimizer
        self.reduction = reduction
        self.history = history

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        loss, objective = losses(self.linear(x), y, self.reduction)
        if self.history.diverged or not self.history.batch_loss(loss.item()):
            self.trainer.should_stop = True
            return None  # Lightning skips the update
        return objective

    def on_train_epoch_end(self) -> None:
        if self.history.end_epoch(param_row(self.linear)):
            self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())
