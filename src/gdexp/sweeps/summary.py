"""A sweep's outcome: counted from its jobs' records, said on the terminal and on its parent run.

Every job leaves ``run.json`` in its directory below the sweep's, whichever launcher ran it, so the
summary needs no store: it counts the runs by status, finds the best ones, and the parent run gets
the same as metrics and a description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from gdexp.console import shown_path
from gdexp.tracking.record import DamagedRecord, RunInfo, find_records

STATUSES = ("converged", "max_epochs", "pruned", "diverged", "killed", "failed")


def sweep_params(overrides: list[str]) -> dict[str, str]:
    """The sweep's axes and fixed values as the parent run's params: ``lr`` -> ``0.01,0.1``."""
    out: dict[str, str] = {}
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return out
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if o.is_sweep_override() and o.is_discrete_sweep() and not _search_space(o):
            texts = zip(o.sweep_iterator(), o.sweep_string_iterator())
            out[key] = ",".join(str(v).lower() if isinstance(v, bool) else text for v, text in texts)
        else:  # a search space, or a fixed value: as typed
            out[key] = str(o.input_line).split("=", 1)[1]
    return {k: v[:6000] for k, v in out.items() if k != "tracking.uri"}


def _number(text: Any) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def _search_space(override: Any) -> bool:
    """``choice(...)``, as typed for a search, rather than a grid's ``a,b``."""
    return not getattr(override.value(), "simple_form", True)


@dataclass
class SweepOutcome:
    """What the sweep's jobs ended with."""

    runs: list[RunInfo] = field(default_factory=list)
    damaged: int = 0

    @classmethod
    def read(cls, folder: Path) -> SweepOutcome:
        out = cls()
        for path in find_records(folder):
            try:
                out.runs.append(RunInfo.load(path))
            except DamagedRecord:
                out.damaged += 1
        return out

    @staticmethod
    def status(run: RunInfo) -> str:
        if run.status == "FINISHED":
            return run.tags.get("gdexp.status", "max_epochs")
        return "running" if run.status == "RUNNING" else run.status.lower()

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for run in self.runs:
            found[self.status(run)] = found.get(self.status(run), 0) + 1
        return {s: found[s] for s in (*STATUSES, "running") if s in found}

    @staticmethod
    def value(run: RunInfo, metric: str) -> float:
        values = [v for k, v, _ in run.metrics if k == metric]
        return values[-1] if values else math.nan

    def best(self, metric: str = "final_loss", n: int = 5) -> list[RunInfo]:
        """The runs that finished without diverging, lowest ``metric`` first."""
        ok = [
            r
            for r in self.runs
            if self.status(r) in ("converged", "max_epochs") and math.isfinite(self.value(r, metric))
        ]
        return sorted(ok, key=lambda r: self.value(r, metric))[:n]

    def metrics(self) -> dict[str, float]:
        """The parent run's metrics: runs by status, and the best final loss."""
        out = {"runs": float(len(self.runs))}
        out.update({f"runs_{s}": float(n) for s, n in self.counts().items()})
        best = self.best(n=1)
        if best:
            out["best_final_loss"] = self.value(best[0], "final_loss")
        return out

    def theory(self) -> str | None:
        """Where the sweep's learning rates sit against plain gradient descent's theory on its
        data: ``lr_optimal`` (the fastest contraction) and ``lr_max_stable`` (above it, the
        iteration diverges). One line where the runs share them; a range where data or bias vary."""
        pairs = {(self.value(r, "lr_optimal"), self.value(r, "lr_max_stable")) for r in self.runs}
        pairs = {pair for pair in pairs if all(math.isfinite(v) and v > 0 for v in pair)}
        if len(pairs) != 1:
            if not pairs:
                return None
            optimals, stables = [sorted(v[i] for v in pairs) for i in (0, 1)]
            return (
                f"theory: lr_optimal {optimals[0]:.4g} to {optimals[-1]:.4g}, lr_max_stable {stables[0]:.4g} to "
                f"{stables[-1]:.4g} across the runs' data and bias"
            )
        optimal, stable = pairs.pop()
        lrs = sorted({float(r.params["lr"]) for r in self.runs if _number(r.params.get("lr"))})
        where = [sum(lr < optimal for lr in lrs), sum(optimal <= lr <= stable for lr in lrs)]
        where.append(len(lrs) - sum(where))
        line = f"theory: lr_optimal {optimal:.4g}, diverges above lr_max_stable {stable:.4g} (plain gradient descent)"
        if lrs:
            line += f"; the lrs swept: {where[0]} below lr_optimal, {where[1]} between the two, {where[2]} above"
        return line

    def counts_text(self) -> str:
        return ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in self.counts().items()) or "no runs"

    def description(self, axes: dict[str, str]) -> str:
        swept = [f"{k} ({v.replace(',', ', ')})" for k, v in axes.items() if "," in v]
        what = f"A sweep of {len(self.runs)} runs" + (f" over {' x '.join(swept)}" if swept else "")
        text = f"{what}: {self.counts_text()}."
        best = self.best(n=1)
        if best:
            run = best[0]
            ident = f" (run {run.mlflow_run_id})" if run.mlflow_run_id else ""
            text += f" Best: `{run.run_name}`{ident}, final loss {self.value(run, 'final_loss'):.4g}."
        if self.damaged:
            text += f" {self.damaged} job records could not be read."
        return text


JOB_FILES = {
    True: "config.yaml, history.csv, loss_curve.png",
    False: "config.yaml, history.csv; curves: gdexp-compare plot, MLflow's UI",
}


def print_sweep_summary(
    outcome: SweepOutcome,
    folder: Path,
    parent: str | None,
    experiment: str | None,
    link: str | None,
    local_store: bool,
    skipped: int = 0,
    loss_curves: bool = True,
) -> None:
    """The lines that end a sweep on the terminal: where it is, how it went, what to do next."""
    total = len(outcome.runs)
    also = f" · {skipped} skipped as finished already" if skipped else ""
    print(f"\ngdexp sweep: {total} runs · {outcome.counts_text()}{also}")
    if parent:
        print(f"  MLflow parent run {parent} · experiment {experiment}")
    best = outcome.best()
    if best:
        rows = [("run", "status", "final_loss", "converged at", "MLflow run")]
        for r in best:
            at = outcome.value(r, "epochs_to_converge")
            rows.append(
                (
                    r.run_name,
                    outcome.status(r),
                    f"{outcome.value(r, 'final_loss'):.4g}",
                    f"{at:.0f}" if math.isfinite(at) else "-",
                    r.mlflow_run_id or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        print(f"  best {len(best)} by final loss:")
        for row in rows:
            print("    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if theory := outcome.theory():
        print(f"  {theory}")
    print(f"  outputs: {shown_path(folder)} (a directory per job: " + JOB_FILES[loss_curves] + ")")
    if link:
        print(f"  open it: {link}" + (" (with `gdexp-ui` running)" if local_store else ""))
    if parent:
        print(f"  next: gdexp-compare table --sweep {parent} · gdexp-compare report · gdexp-ui")
