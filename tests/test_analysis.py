"""The closed-form view: the stability bound, divergence at it, the least-squares optimum."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import run, run_recorded

CASES = {  # data, bias, 2 / lambda_max of the MSE Hessian
    "line": (["data=line", "bias=false"], 2 / 15),
    "line_intercept": (["data=line_intercept", "bias=true"], 0.11976),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_lr_max_stable_is_two_over_largest_hessian_eigenvalue(case, tmp_path):
    overrides, bound = CASES[case]
    recorded = run_recorded(overrides + ["epochs=1"], tmp_path).metrics["lr_max_stable"]
    assert recorded == pytest.approx(bound, abs=5e-6)
    assert f"{recorded:.5f}" == {"line": "0.13333", "line_intercept": "0.11976"}[case]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "engine",
    [pytest.param("lightning", marks=pytest.mark.slow), pytest.param("autograd", marks=pytest.mark.slow), "numpy"],
)
def test_lr_just_above_bound_diverges_and_just_below_converges(case, engine, tmp_path):
    overrides, _ = CASES[case]
    bound = run(overrides + ["epochs=1"], tmp_path).summary["lr_max_stable"]
    above = run(overrides + [f"lr={bound * 1.02}", "epochs=3000", f"engine={engine}"], tmp_path)
    below = run(overrides + [f"lr={bound * 0.98}", "epochs=3000", f"engine={engine}"], tmp_path)

    assert above.status == "diverged" and above.summary["diverged"] == 1.0
    assert above.history.epochs < 3000  # stopped early
    last = above.history.loss[-1]
    assert not math.isfinite(last) or last > 1e12
    assert all(math.isfinite(v) and v <= 1e12 for v in above.history.loss[:-1])
    assert len(above.history.params) == above.history.epochs + 1  # a parameter row for every epoch

    assert below.status == "converged" and below.summary["diverged"] == 0.0
    assert below.history.epochs == 3000
    assert below.summary["dist_to_opt"] < 1e-3
    assert below.summary["epochs_to_converge"] <= 3000


def test_summary_holds_closed_form_optimum_and_distance(tmp_path):
    out = run(["data=line_intercept", "bias=true", "lr=0.1", "epochs=2000"], tmp_path)
    assert out.summary["w_star"] == pytest.approx(2.0)
    assert out.summary["b_star"] == pytest.approx(3.0)
    w, b = out.history.params[-1]
    assert out.summary["dist_to_opt"] == pytest.approx(math.hypot(w - 2.0, b - 3.0), abs=1e-9)
    # the seeds' model without a bias cannot fit y = 2x + 3: its optimum is the least squares slope
    no_bias = run(["data=line_intercept", "bias=false", "epochs=1"], tmp_path)
    assert no_bias.summary["w_star"] == pytest.approx(float(np.dot([1, 2, 3, 4], [5, 7, 9, 11]) / 30))


def test_epochs_to_converge_is_first_epoch_at_tolerance(tmp_path):
    out = run(["epochs=100"], tmp_path)
    first = out.summary["epochs_to_converge"]
    assert out.history.loss[int(first) - 1] <= 1e-6 < out.history.loss[int(first) - 2]
    slow = run(["epochs=5"], tmp_path)
    assert "epochs_to_converge" not in slow.summary and slow.status == "max_epochs"


def test_diverging_member_of_sweep_still_finishes_with_curves_until_it_stopped(tmp_path):
    out = run(["lr=1.0", "epochs=500"], tmp_path)
    assert out.status == "diverged"
    assert 1 < out.history.epochs < 500
    assert out.summary["epochs_run"] == out.history.epochs
