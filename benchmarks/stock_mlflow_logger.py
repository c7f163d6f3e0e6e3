"""The baseline gdexp is measured against: the same 3000-epoch Lightning run on the seeds' problem,
logged the stock way, with Lightning's MLFlowLogger and ``self.log`` of loss and w every epoch.

Usage: python benchmarks/stock_mlflow_logger.py TRACKING_URI [EPOCHS]
"""

from __future__ import annotations

import logging
import sys
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn


class Seeds(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.linear.weight)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.linear(x), y)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("w", self.linear.weight.item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class FullBatch:
    def __init__(self, X, Y):
        self.X, self.Y = X, Y

    def __iter__(self):
        yield self.X, self.Y

    def __len__(self) -> int:
        return 1


def main() -> None:
    uri = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    X = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=MLFlowLogger(experiment_name="stock", tracking_uri=uri),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(Seeds(), train_dataloaders=FullBatch(X, 2 * X))


if __name__ == "__main__":
    main()
