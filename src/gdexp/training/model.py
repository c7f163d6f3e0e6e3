"""The model: ``nn.Linear`` with MSE, its initialisation, and its LightningModule."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from gdexp.training.history import History


def make_linear(
    n_features: int, n_targets: int, bias: bool, init: str, init_std: float, seed: int, dtype: str = "float32"
) -> nn.Linear:
    """``nn.Linear`` initialised as ``init`` says: zeros (the seeds' w = 0, b = 0), PyTorch's
    default, or N(0, init_std), the random ones drawn from ``seed`` (in float32, then cast)."""
    torch.manual_seed(seed)
    linear = nn.Linear(n_features, n_targets, bias=bias)
    with torch.no_grad():
        for p in linear.parameters():
            if init == "zeros":
                p.zero_()
            elif init == "normal":
                p.normal_(0.0, init_std)
    return linear.to(getattr(torch, dtype))


def param_row(linear: nn.Linear) -> list[float]:
    """The parameters as one flat row: every target's weights, then the biases."""
    parts = [linear.weight.detach().reshape(-1)]
    if linear.bias is not None:
        parts.append(linear.bias.detach())
    return torch.cat(parts).tolist()


def losses(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The recorded loss (always the mean squared error) and the objective the gradient is taken
    from: the same tensor for ``mean``, the sum of squared errors for ``sum``."""
    loss = F.mse_loss(pred, target)
    return loss, (loss if reduction == "mean" else F.mse_loss(pred, target, reduction="sum"))


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
