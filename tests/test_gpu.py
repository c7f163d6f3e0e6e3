"""The GPU path (marked ``gpu``: skipped where torch sees no CUDA device). ``scripts/gpu_check.sh``
runs these, the seed tables and the engine-equivalence tests with ``accelerator=gpu``, and times
sweeps on the GPU against ``accelerator=cpu``."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from conftest import REPO, make_config, run

from gdexp.config import group_options


def _population(lrs: np.ndarray, accelerator: str, optimizer: str = "sgd", epochs: int = 200):
    """A batched population on ``line_intercept``, a member per learning rate."""
    from gdexp.training import population
    from gdexp.training.data import load_data
    from gdexp.training.engines import make_optimizer
    from gdexp.training.model import make_linear

    cfg = make_config(["data=line_intercept", "bias=true", f"optimizer={optimizer}", f"accelerator={accelerator}"])
    data = load_data(cfg.data).as_dtype("float64")
    members = [
        population.Member(make_linear(1, 1, True, "zeros", 1.0, 0, "float64"), float(lr), epochs, 1e12) for lr in lrs
    ]
    scale = population.lr_linear(cfg.optimizer)
    return population.train_population(
        data.X,
        data.Y,
        members,
        make_optimizer(cfg, lr=1.0 if scale else float(lrs[0])),
        reduction="mean",
        scale_lr=scale,
        accelerator=accelerator,
        dtype="float64",
    )


@pytest.mark.gpu
def test_a_population_of_100000_members_trains_on_the_gpu_as_on_the_cpu():
    lrs = np.geomspace(1e-3, 0.1, 100_000)
    gpu = _population(lrs, "gpu")
    assert gpu.loss.shape == (200, 100_000) and np.isfinite(gpu.loss).all()
    cpu = _population(lrs[::100], "cpu")  # every 100th member, on the CPU
    np.testing.assert_allclose(gpu.loss[:, ::100], cpu.loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.params[:, ::100], cpu.params, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", group_options("optimizer"))
def test_lightning_on_the_gpu_equals_the_cpu(optimizer, tmp_path):
    common = ["data=line_intercept", "bias=true", f"optimizer={optimizer}", "epochs=300", "lr=0.05"]
    gpu = run([*common, "accelerator=gpu"], tmp_path / "gpu")
    cpu = run([*common, "accelerator=cpu"], tmp_path / "cpu")
    np.testing.assert_allclose(gpu.history.loss, cpu.history.loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.history.params, cpu.history.params, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
def test_auto_picks_the_gpu(tmp_path):
    from gdexp.training.engines import device_for

    assert device_for("auto").type == "cuda"
    outcome = run(["accelerator=auto", "epochs=20"], tmp_path)
    assert outcome.status in ("converged", "max_epochs")


def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: scripts/gpu_check.sh would run the whole check")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("gpu_check: ")
    assert "no CUDA device" in done.stdout and not (tmp_path / "out").exists()
