"""The three training loops. They share the data, the initial ``nn.Linear``, the batching and
the :class:`History`; each differs only in how one epoch's updates are computed.

- ``lightning``: a Lightning Trainer fits :class:`gdexp.training.module.LinearRegression`.
- ``autograd``: the same model and ``torch.optim`` optimizer in a plain PyTorch loop (seeds 001-004).
- ``numpy``: the analytic MSE gradient in NumPy, plain gradient descent (seeds 000-003).
"""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gdexp.config import ConfigError
from gdexp.training.data import Dataset
from gdexp.training.history import History, RunInterrupted
from gdexp.training.model import losses, param_row


def device_for(accelerator: str) -> torch.device:
    """The device ``accelerator`` asks for; ``gpu`` without one is a :class:`ConfigError`."""
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("accelerator", "gpu", "auto or cpu", "no GPU is available on this machine")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


class Batches:
    """Index sets of one epoch: the full batch, or a fresh seeded shuffle cut into minibatches."""

    def __init__(self, n_samples: int, batch_size: int | None, seed: int):
        self.n = n_samples
        self.size = batch_size if batch_size and batch_size < n_samples else None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 1 if self.size is None else -(-self.n // self.size)

    def __iter__(self) -> Iterator[slice | np.ndarray]:
        if self.size is None:
            yield slice(None)
            return
        order = torch.randperm(self.n, generator=self.generator).numpy()
        for start in range(0, self.n, self.size):
            yield order[start : start + self.size]


class _TensorBatches:
    """``Batches`` as (x, y) tensors: the train loader handed to Lightning."""

    def __init__(self, batches: Batches, X: torch.Tensor, Y: torch.Tensor):
        self.batches, self.X, self.Y = batches, X, Y

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.batches:
            yield self.X[idx], self.Y[idx]


def load_engine(name: str) -> None:
    """Import what engine ``name`` trains with (Lightning: seconds), so a caller can do it while
    something else waits, the MLflow writer's start for one."""
    if name == "lightning":
        import gdexp.training.module  # noqa: F401


def train(cfg: DictConfig, data: Dataset, linear: torch.nn.Module, history: History) -> History:
    """Train ``linear`` on ``data`` with the engine ``cfg.engine`` names, recording into ``history``."""
    batches = Batches(len(data.X), cfg.batch_size, cfg.seed)
    engine = {"lightning": _lightning, "autograd": _autograd, "numpy": _numpy}[str(cfg.engine.value)]
    engine(cfg, data, linear, history, batches)
    history.flush()
    return history


def make_optimizer(cfg: DictConfig, lr: float | None = None):
    """The config's ``torch.optim`` class as a factory that takes the parameters (the group files
    are ``_partial_: true``), with ``lr`` in place of the config's when given."""
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.optimizer, resolve=True))
    spec = {k: v for k, v in options.items() if k != "name"}
    if lr is not None:
        spec["lr"] = lr
    return instantiate(spec, _convert_="all")


def fit(module, loader, *, epochs: int, accelerator: str, dtype: str) -> None:
    """Fit a LightningModule on in-memory batches with gdexp's Trainer: no logger, checkpoints,
    progress bar or validation (the run's History and the tracker do that work)."""
    import pytorch_lightning as pl

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    with warnings.catch_warnings():
        # Tiny in-memory batches: Lightning's advice about workers and returning None does not
        # apply; nor does its hint to use `srun` wherever Slurm is installed (gdexp's Slurm jobs are
        # one process each), once per job.
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
        warnings.filterwarnings("ignore", message=".*`srun` command is available")
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            precision="64-true" if dtype == "float64" else "32-true",
        )
        try:
            trainer.fit(module, train_dataloaders=loader)
        except SIGTERMException:
            # Lightning ends fit on SIGTERM with a SystemExit (exit status 0, a silent success);
            # to gdexp a SIGTERM is an interrupt like SIGINT: recorded KILLED, exit 143.
            raise RunInterrupted(signal.SIGTERM) from None


def _lightning(cfg: DictConfig, data: Dataset, linear, history: History, batches: Batches) -> None:
    from gdexp.training.module import LinearRegression  # Lightning: seconds to import, this engine only

    module = LinearRegression(linear, make_optimizer(cfg), cfg.loss_reduction.value, history)
    loader = _TensorBatches(batches, torch.from_numpy(data.X), torch.from_numpy(data.Y))
    fit(module, loader, epochs=cfg.epochs, accelerator=cfg.accelerator.value, dtype=cfg.dtype.value)


def _autograd(cfg: DictConfig, data: Dataset, linear, history: History, batches: Batches) -> None:
    device = device_for(cfg.accelerator.value)
    linear.to(device)
    X, Y = torch.from_numpy(data.X).to(device), torch.from_numpy(data.Y).to(device)
    optimizer = make_optimizer(cfg)(linear.parameters())
    reduction = cfg.loss_reduction.value
    for _ in range(cfg.epochs):
        for idx in batches:
            loss, objective = losses(linear(X[idx]), Y[idx], reduction)
            if not history.batch_loss(loss.item()):
                break
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
        if history.end_epoch(param_row(linear)):
            break


def _numpy(cfg: DictConfig, data: Dataset, linear, history: History, batches: Batches) -> None:
    # The analytic gradient of the MSE of X @ W.T + b, in the order autograd computes it:
    # g = (pred - y) * 2/n (2 for the sum), dW = g.T @ X, db = sum of g over samples.
    W = linear.weight.detach().cpu().numpy().copy()
    b = linear.bias.detach().cpu().numpy().copy() if linear.bias is not None else None
    dtype = data.X.dtype.type
    lr = dtype(cfg.lr)
    for _ in range(cfg.epochs):
        for idx in batches:
            x, y = data.X[idx], data.Y[idx]
            pred = x @ W.T if b is None else x @ W.T + b
            err = pred - y
            if not history.batch_loss(float(np.mean(np.square(err)))):
                break
            g = err * dtype(2.0 / err.size if cfg.loss_reduction.value == "mean" else 2.0)
            W -= lr * (g.T @ x)
            if b is not None:
                b -= lr * g.sum(axis=0)
        if history.end_epoch(W.ravel().tolist() + ([] if b is None else b.tolist())):
            break
    with torch.no_grad():  # leave the trained parameters in the model, as the other engines do
        linear.weight.copy_(torch.from_numpy(W))
        if b is not None:
            linear.bias.copy_(torch.from_numpy(b))
