"""What a job ended with: its history, summary metrics, status and predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gdexp.tracking.protocol import MetricRow
from gdexp.training.history import History


@dataclass
class Outcome:
    """What a job ended with (returned to Hydra as plain values, to tests and notebooks as is)."""

    run_id: str | None
    history: History
    summary: dict[str, float]
    status: str  # converged, diverged, max_epochs, pruned; killed or failed when it did not end by itself
    pred_before: dict[str, float]  # pred_5 -> f(5) with the initial parameters
    pred_after: dict[str, float]  # ... with the final ones
    points: list[list[float]]
    metric_rows: list[MetricRow]  # summary and predictions, as MLflow gets them
    output_dir: str = ""  # the job directory: config.yaml, history.csv, run.json, loss_curve.png

    def returned(self) -> dict[str, Any]:
        """What goes back to a launcher: plain values that pickle (joblib, submitit)."""
        return {"run_id": self.run_id, "status": self.status, "output_dir": self.output_dir, **self.summary}

    def prediction(self, after: bool = True) -> str:
        """The seeds' ``f(5) = 10.000``: every prediction point, every target."""
        preds = list((self.pred_after if after else self.pred_before).values())
        per_point = len(preds) // max(len(self.points), 1)
        return "; ".join(
            f"f({fmt_point(p)}) = " + ", ".join(f"{v:.3f}" for v in preds[i * per_point : (i + 1) * per_point])
            for i, p in enumerate(self.points)
        )


def fmt_point(point: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in point)
