"""Adding things the documented way (README, "For developers"): a dataset is one YAML and one
registered loader; a metric is one registered function. Both are then trained, tracked and shown."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_config
from mlflow import MlflowClient
from omegaconf import DictConfig

from gdexp.compare.cli import main as compare_main
from gdexp.job import run_job
from gdexp.training import data as data_module
from gdexp.training import metrics as metrics_module
from gdexp.training.data import Dataset, loader
from gdexp.training.metrics import Finished, metric

SINE_YAML = """\
# y = amplitude * sin(x) sampled at n points in [0, 3]: a dataset a user adds.
name: sine
n: 20
amplitude: 2.0
"""


@pytest.fixture
def registered():
    """A dataset loader and a metric, registered as the README says; unregistered afterwards."""
    loaders, metrics = dict(data_module.LOADERS), list(metrics_module.METRICS)

    @loader("sine")
    def sine(data: DictConfig, launch_dir: Path) -> Dataset:
        x = np.linspace(0.0, 3.0, int(data.n), dtype=np.float32)[:, None]
        return Dataset(x, (float(data.amplitude) * np.sin(x)).astype(np.float32), ["x"], ["y"])

    @metric()
    def max_abs_w(run: Finished) -> float:
        return max(abs(v) for v in run.final[: run.data.n_features])

    yield
    data_module.LOADERS.clear()
    data_module.LOADERS.update(loaders)
    metrics_module.METRICS[:] = metrics


def test_a_new_dataset_and_metric_are_trained_tracked_and_tabled(registered, tmp_path, capsys):
    conf = tmp_path / "myconf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "sine.yaml").write_text(SINE_YAML)
    overrides = ["data=sine", "bias=true", "epochs=50", "lr=0.1"]
    cfg = make_config([f"hydra.searchpath=[file://{conf}]", *overrides])
    outcome = run_job(cfg, overrides=overrides, output_dir=tmp_path / "job", launch_dir=tmp_path, quiet=True)

    assert outcome.history.epochs == 50 and math.isfinite(outcome.summary["final_loss"])
    w = outcome.history.params[-1][0]
    assert outcome.summary["max_abs_w"] == pytest.approx(abs(w))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(outcome.run_id)
    assert run.data.params["data.name"] == "sine" and run.data.params["data.amplitude"] == "2.0"
    assert run.data.metrics["max_abs_w"] == pytest.approx(abs(w), rel=1e-6)

    capsys.readouterr()
    compare_main(["table", "--sweep", "all", "--tracking-uri", uri, "--format", "csv"])
    header, row = capsys.readouterr().out.strip().splitlines()
    columns = header.split(",")
    assert columns[-1] == "max_abs_w" and "final_loss" in columns and "dist_to_opt" in columns
    assert float(row.split(",")[-1]) == pytest.approx(abs(w), rel=1e-5)


@pytest.fixture
def extended_schema(monkeypatch):
    """The schema with one more key, added the one way: a field of :class:`gdexp.config.Config`."""
    from dataclasses import dataclass

    from gdexp import config as config_module

    @dataclass
    class Extended(config_module.Config):
        warmup_epochs: int = 3

    monkeypatch.setattr(config_module, "Config", Extended)
    config_module.register_configs()
    yield
    monkeypatch.undo()
    config_module.register_configs()


def test_a_new_config_key_is_one_field_of_the_schema(extended_schema, tmp_path):
    """No YAML, no help text, no check list to edit: the key composes with its default, takes an
    override, rejects a value of the wrong type in one line, shows in --help and becomes a param."""
    from hydra.errors import ConfigCompositionException

    from gdexp.config import flatten, help_template
    from gdexp.explain import one_line

    assert make_config([]).warmup_epochs == 3
    cfg = make_config(["warmup_epochs=7"])
    assert cfg.warmup_epochs == 7 and flatten(cfg)["warmup_epochs"] == "7"
    with pytest.raises(ConfigCompositionException) as bad:
        make_config(["warmup_epochs=soon"])
    assert one_line(bad.value, ["warmup_epochs=soon"]).startswith("warmup_epochs=soon: ")
    assert "warmup_epochs (3)" in help_template()
    outcome = run_job(cfg, overrides=["warmup_epochs=7"], output_dir=tmp_path / "job", launch_dir=tmp_path, quiet=True)
    assert "warmup_epochs: 7" in (tmp_path / "job" / "config.yaml").read_text()
    assert math.isfinite(outcome.summary["final_loss"])
