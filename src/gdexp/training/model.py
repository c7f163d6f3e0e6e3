"""The model: ``nn.Linear`` with MSE, and its initialisation (the LightningModule that trains it is
:mod:`gdexp.training.module`, imported only by the engine that uses it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_linear(
    n_features: int, n_targets: int, bias: bool, init: str, init_std: float, seed: int, dtype: str = "float32"
) -> nn.Linear:
    """``nn.Linear`` initialised as ``init`` says: zeros (the seeds' w = 0, b = 0), PyTorch's
    default, or N(0, init_std), the random ones drawn from ``seed`` (in float32, then cast)."""
    seed_torch(seed)
    linear = nn.Linear(n_features, n_targets, bias=bias)
    with torch.no_grad():
        for p in linear.parameters():
            if init == "zeros":
                p.zero_()
            elif init == "normal":
                p.normal_(0.0, init_std)
    return linear.to(getattr(torch, dtype))


def seed_torch(seed: int) -> None:
    """``torch.manual_seed``, without its cost where no CUDA device can be seeded: before CUDA is
    initialised it queues the seeding of every device with a captured stack trace (about 1 ms,
    and a queue that grows by one entry a call), which a population of 10,000 members pays for
    each. The CPU generator, which draws the initial weights, is seeded alike either way."""
    if torch.cuda.is_available():
        torch.manual_seed(seed)
    else:
        torch.random.default_generator.manual_seed(seed)


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
