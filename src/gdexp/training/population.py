"""The batched engine: many runs of one problem trained as one tensor program.

A population stacks its members' ``nn.Linear`` parameters: weights of shape (members, targets,
features) and biases of shape (members, targets), with a mask for the members that have no bias.
One Lightning training step computes every member's MSE on its batch at once (the full batch, or
each member's own minibatch), and the config's own ``torch.optim`` optimizer updates every
member. Each member keeps its own learning rate: the optimizer steps with lr = 1 and the step is
scaled per member, which is exact for optimizers whose update is proportional to lr
(:func:`lr_linear`). Members stop at their own epoch count; a member whose loss diverges is frozen
at that epoch, as the per-run engines stop it.

A search's pruner (``prune``, asked after every epoch) may stop members early. Then the members
that stopped leave the tensor program: their rows go from the parameters, the optimizer's state
and every per-member buffer, so the epochs left cost only the members still training. Rows map
to members through ``slot``; the histories keep a column per member.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from gdexp.training.engines import Batches, fit
from gdexp.training.history import RunInterrupted

# torch.optim classes whose step is lr times an lr-free direction, given the same state: SGD with
# momentum, dampening, Nesterov and weight decay; Adam, AdamW (its decoupled decay is lr * wd * p);
# RMSprop; Adagrad (even with lr_decay: its step size is lr / (1 + (step - 1) * lr_decay)). Not,
# for instance, ASGD (eta = lr / (1 + lambd * lr * t) ** alpha) or Rprop (lr is a clamped step size).
LR_LINEAR = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.RMSprop", "torch.optim.Adagrad")


def lr_linear(optimizer: DictConfig) -> bool:
    """Whether this optimizer's step scales exactly with lr, so members with different learning
    rates can share one optimizer stepped with lr = 1. Optimizers not known to be are trained in
    populations of one learning rate."""
    return optimizer._target_ in LR_LINEAR


@dataclass
class Member:
    """One run's part of a population: its initial ``nn.Linear`` and its own settings."""

    linear: nn.Linear
    lr: float
    epochs: int
    diverge_above: float


@dataclass
class Curves:
    """What a population saw, per member: ``loss[e, m]`` is member m's MSE at epoch e + 1 and
    ``params[e, m]`` its parameter row after epoch e (row 0: the initial one), in float64."""

    loss: np.ndarray
    params: np.ndarray
    epochs_run: np.ndarray
    diverged: np.ndarray
    interrupted: bool
    pruned: np.ndarray


# After an epoch (1-based), the members still training (their indices) and their losses: which of
# them stop (a search's pruner, :class:`gdexp.sweeps.pruning.PopulationPruning`, whose ``steps``
# names the epochs it judges; a plain function is asked after every epoch).
Prune = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


class Population(pl.LightningModule):
    """Stacked ``nn.Linear`` members with MSE and per-member learning rates, trained on the full
    batch or on each member's own minibatches."""

    # Registered buffers: they move with the module to its device. Per row (a member still in the
    # program): bias_mask, lr, epochs, diverge_above, active, diverged, batch_loss_sum, batches,
    # slot (its member); per member: the rest.
    bias_mask: torch.Tensor
    lr: torch.Tensor
    epochs: torch.Tensor
    diverge_above: torch.Tensor
    active: torch.Tensor
    diverged: torch.Tensor
    epochs_run: torch.Tensor
    batch_loss_sum: torch.Tensor
    batches: torch.Tensor
    loss_history: torch.Tensor
    param_history: torch.Tensor
    slot: torch.Tensor
    member_diverged: torch.Tensor
    pruned: torch.Tensor

    def __init__(
        self,
        members: list[Member],
        make_optimizer: Callable,
        reduction: str,
        scale_lr: bool,
        stop: Callable[[], bool] = lambda: False,
        prune: Prune | None = None,
        on_compact: Callable[[torch.Tensor], None] = lambda rows: None,
    ):
        super().__init__()
        self.automatic_optimization = False  # the step is scaled per member: see training_step
        self.make_optimizer, self.reduction, self.scale_lr, self.stop = make_optimizer, reduction, scale_lr, stop
        self.prune, self.on_compact = prune, on_compact
        first = members[0].linear
        dtype, (n_targets, n_features) = first.weight.dtype, first.weight.shape
        self.weight = nn.Parameter(torch.stack([m.linear.weight.detach() for m in members]))
        zeros = torch.zeros(n_targets, dtype=dtype)
        biases = [m.linear.bias.detach() if m.linear.bias is not None else zeros for m in members]
        self.bias = nn.Parameter(torch.stack(biases))
        self.register_buffer("bias_mask", torch.tensor([[m.linear.bias is not None] for m in members], dtype=dtype))
        self.register_buffer("lr", torch.tensor([m.lr for m in members], dtype=dtype))
        self.register_buffer("epochs", torch.tensor([m.epochs for m in members]))
        self.register_buffer("diverge_above", torch.tensor([m.diverge_above for m in members], dtype=torch.float64))
        self.register_buffer("active", torch.ones(len(members), dtype=torch.bool))
        self.register_buffer("diverged", torch.zeros(len(members), dtype=torch.bool))
        self.register_buffer("epochs_run", torch.zeros(len(members), dtype=torch.long))
        self.register_buffer("batch_loss_sum", torch.zeros(len(members), dtype=torch.float64))
        self.register_buffer("batches", torch.zeros(len(members), dtype=torch.long))
        most = max(m.epochs for m in members)
        self.register_buffer("loss_history", torch.full((most, len(members)), math.nan, dtype=dtype))
        width = n_targets * (n_features + 1)
        self.register_buffer("param_history", torch.zeros((most + 1, len(members), width), dtype=dtype))
        self.register_buffer("slot", torch.arange(len(members)))
        self.register_buffer("member_diverged", torch.zeros(len(members), dtype=torch.bool))
        self.register_buffer("pruned", torch.zeros(len(members), dtype=torch.bool))
        self.param_history[0] = self._rows()
        self.interrupted = False

    def _rows(self) -> torch.Tensor:
        """Every member's parameters as a row: weights target by target, then the biases (as
        :func:`gdexp.training.model.param_row`; the bias columns of members without one are zero)."""
        return torch.cat([self.weight.detach().flatten(1), self.bias.detach()], dim=1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # the full batch, shared: (samples, ...); minibatches, each member's own: (members, samples, ...)
        inputs = "nf,mtf->mnt" if x.dim() == 2 else "mnf,mtf->mnt"
        pred = torch.einsum(inputs, x, self.weight) + (self.bias * self.bias_mask)[:, None, :]
        squared = (pred - y).square()
        loss = squared.mean(dim=(1, 2))
        objective = loss if self.reduction == "mean" else squared.sum(dim=(1, 2))
        running = self.active & ~self.diverged  # a member that diverged this epoch sits out its other batches
        bad = ~torch.isfinite(loss) | (loss.detach().double() > self.diverge_above)
        step = running & ~bad  # a diverging member's update is skipped, as the per-run engines skip it
        self.batch_loss_sum += torch.where(running, loss.detach().double(), 0.0)
        self.batches += running
        self.diverged |= running & bad

        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # configure_optimizers returns one
        optimizer.zero_grad()
        # Members that do not step contribute nothing (their inf or NaN never reaches the others).
        self.manual_backward(torch.where(step, objective, torch.zeros_like(objective)).sum())
        before = [self.weight.detach().clone(), self.bias.detach().clone()]
        optimizer.step()
        with torch.no_grad():
            for p, p0 in zip((self.weight, self.bias), before):
                shape = (-1,) + (1,) * (p.dim() - 1)
                # p - p0 is the lr = 1 step (exact: the two are close); lr times it is the member's.
                moved = p0 + self.lr.view(shape) * (p - p0) if self.scale_lr else p
                p.copy_(torch.where(step.view(shape), moved, p0))

    def on_train_epoch_end(self) -> None:
        # The epoch's loss is the mean of its batches' (as History.end_epoch takes it), and the
        # parameters after it; members stop at their own epoch count or when they diverged.
        epoch = self.current_epoch
        losses = self.batch_loss_sum / self.batches.clamp(min=1)
        if self.slot.numel() == self.loss_history.shape[1]:  # every member still in the program
            self.loss_history[epoch] = losses.to(self.loss_history.dtype)
            self.param_history[epoch + 1] = self._rows()
            self.epochs_run += self.active
        else:
            self.loss_history[epoch, self.slot] = losses.to(self.loss_history.dtype)
            self.param_history[epoch + 1, self.slot] = self._rows()
            self.epochs_run[self.slot] += self.active
        self.active = self.active & ~self.diverged & (self.epochs > epoch + 1)
        self.batch_loss_sum.zero_()
        self.batches.zero_()
        if self.prune is not None:
            self._ask_pruner(epoch + 1, losses)
        if self.stop():
            self.interrupted = True
            self.trainer.should_stop = True
        elif not bool(self.active.any()):
            self.trainer.should_stop = True

    def _ask_pruner(self, epoch: int, losses: torch.Tensor) -> None:
        """The pruner's say on the rows still training; the stopped ones leave the program. A
        pruner that names the epochs it judges (``steps``) is not asked after the others: no
        device-to-host copy in an epoch where no member reports."""
        assert self.prune is not None
        steps = getattr(self.prune, "steps", None)
        if steps is not None and epoch not in steps:
            return
        rows = self.active.nonzero().flatten()
        if not rows.numel():
            return
        stop = self.prune(epoch, self.slot[rows].cpu().numpy(), losses[rows].double().cpu().numpy())
        if not stop.any():
            return
        stopped = rows[torch.as_tensor(stop, device=rows.device)]
        self.pruned[self.slot[stopped]] = True
        self.active[stopped] = False
        self._compact(self.active.nonzero().flatten())

    def _compact(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep``: the parameters, the optimizer's per-member state and every
        per-row buffer (the other rows' histories are already written)."""
        self.member_diverged[self.slot] = self.diverged
        wrapped = self.optimizers()
        assert not isinstance(wrapped, list)  # configure_optimizers returns one
        optimizer = wrapped.optimizer  # torch's own, inside Lightning's wrapper
        rows = self.weight.shape[0]
        for p in (self.weight, self.bias):
            state = optimizer.state.get(p, {})
            for key, value in list(state.items()):
                if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows:
                    state[key] = value[keep]
            p.data = p.data[keep]
            p.grad = None
        for name in ("bias_mask", "lr", "epochs", "diverge_above", "active", "diverged", "batch_loss_sum", "batches"):
            setattr(self, name, getattr(self, name)[keep])
        self.slot = self.slot[keep]
        self.on_compact(keep)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer([self.weight, self.bias])

    def curves(self) -> Curves:
        """The histories, moved to the CPU once."""
        self.member_diverged[self.slot] = self.diverged
        return Curves(
            self.loss_history.double().cpu().numpy(),
            self.param_history.double().cpu().numpy(),
            self.epochs_run.cpu().numpy(),
            self.member_diverged.cpu().numpy(),
            self.interrupted,
            self.pruned.cpu().numpy(),
        )


class MemberBatches:
    """The batches of one epoch for every member: the full batch, shared; or each member's own
    minibatches, shuffled from its own seed exactly as :class:`gdexp.training.engines.Batches` shuffles a
    per-run job's (members with the same seed share the draw)."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, batch_size: int | None, seeds: list[int]):
        unique = sorted(set(seeds))
        self.X, self.Y = X, Y
        self.draws = [Batches(len(X), batch_size, seed) for seed in unique]
        self.member_draw = torch.tensor([unique.index(seed) for seed in seeds])

    def __len__(self) -> int:
        return len(self.draws[0])

    def keep(self, rows: torch.Tensor) -> None:
        """Only these members from the next epoch on (the others left the program)."""
        self.member_draw = self.member_draw[rows.cpu()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.draws[0].size is None:
            yield self.X, self.Y
            return
        epoch = [list(draw) for draw in self.draws]  # one shuffle per seed, as each job draws it
        for k in range(len(self)):
            idx = torch.stack([torch.as_tensor(order[k]) for order in epoch])[self.member_draw]
            yield self.X[idx], self.Y[idx]


def train_population(
    X: np.ndarray,
    Y: np.ndarray,
    members: list[Member],
    make_optimizer: Callable,
    *,
    reduction: str,
    scale_lr: bool,
    accelerator: str,
    dtype: str,
    batch_size: int | None = None,
    seeds: list[int] | None = None,
    stop: Callable[[], bool] = lambda: False,
    prune: Prune | None = None,
) -> Curves:
    """Train ``members`` on (X, Y) with a Lightning Trainer, full-batch or in minibatches of
    ``batch_size`` drawn from each member's seed; their curves. ``prune`` may stop members early."""
    loader = MemberBatches(torch.from_numpy(X), torch.from_numpy(Y), batch_size, seeds or [0] * len(members))
    module = Population(members, make_optimizer, reduction, scale_lr, stop, prune, loader.keep)
    try:
        fit(module, loader, epochs=max(m.epochs for m in members), accelerator=accelerator, dtype=dtype)
    except RunInterrupted:  # a signal Lightning acted on first: the completed epochs are in the buffers
        module.interrupted = True
    return module.curves()
