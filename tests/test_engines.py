"""The engines agree: Lightning is a plain PyTorch loop, bit for bit; NumPy matches to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import OPTIMIZERS, run


def curves(overrides, tmp_path):
    h = run(overrides, tmp_path).history
    return np.asarray(h.loss), np.asarray(h.params)


@pytest.fixture
def csv_data(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 2))
    lines = ["a,b,y,z"] + [f"{a},{b},{3 * a - b + 0.5},{-a + 2 * b}" for a, b in X]
    path = tmp_path / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


DATASETS = {
    "line": ["data=line"],
    "line_intercept": ["data=line_intercept"],
    "synthetic": ["data=synthetic", "data.n_features=3", "data.noise=0.1", "data.n_samples=20"],
}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("data", list(DATASETS))
def test_lightning_equals_plain_pytorch_loop(optimizer, bias, data, tmp_path):
    common = DATASETS[data] + [f"optimizer={optimizer}", f"bias={str(bias).lower()}", "epochs=60", "lr=0.05"]
    loss_l, params_l = curves(common + ["engine=lightning"], tmp_path)
    loss_a, params_a = curves(common + ["engine=autograd"], tmp_path)
    assert len(loss_l) == 60
    np.testing.assert_array_equal(loss_l, loss_a)
    np.testing.assert_array_equal(params_l, params_a)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("bias", [True, False])
def test_lightning_equals_plain_loop_on_csv_with_two_targets(optimizer, bias, csv_data, tmp_path):
    common = [
        "data=csv",
        f"data.path={csv_data}",
        "data.target=[y,z]",
        f"optimizer={optimizer}",
        f"bias={str(bias).lower()}",
        "epochs=40",
        "lr=0.05",
        "predict_at=[1.0,2.0]",
    ]
    loss_l, params_l = curves(common + ["engine=lightning"], tmp_path)
    loss_a, params_a = curves(common + ["engine=autograd"], tmp_path)
    assert params_l.shape == (41, 4 + 2 * bias)  # w_{t}_{i} for 2 targets x 2 features, b_{t}
    np.testing.assert_array_equal(loss_l, loss_a)
    np.testing.assert_array_equal(params_l, params_a)


SETTINGS = [
    ["data=line", "bias=false", "lr=0.01"],
    ["data=line_intercept", "bias=true", "lr=0.05"],
    ["data=synthetic", "data.n_features=3", "data.noise=0.1", "bias=true", "lr=0.05"],
]


def engine_curves(setting, reduction, dtype, tmp_path):
    lr = [o for o in setting if o.startswith("lr=")]
    setting = setting + ([f"lr={float(lr[0][3:]) / 4}"] if reduction == "sum" else [])  # sum: 4x the step
    common = setting + [f"loss_reduction={reduction}", "epochs=100", f"dtype={dtype}"]
    return {e: curves(common + [f"engine={e}"], tmp_path) for e in ("lightning", "autograd", "numpy")}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_three_engines_agree_to_1e6_relative(setting, reduction, tmp_path):
    # In float64 rounding is far below 1e-6, so any disagreement is a difference in the math.
    runs = engine_curves(setting, reduction, "float64", tmp_path)
    ref_loss, ref_params = runs["autograd"]
    for engine, (loss, params) in runs.items():
        meaningful = ref_loss > 1e-20 * ref_loss[0]  # below this a loss is rounding noise
        np.testing.assert_allclose(loss[meaningful], ref_loss[meaningful], rtol=1e-6, err_msg=engine)
        np.testing.assert_allclose(params, ref_params, rtol=1e-6, atol=1e-12, err_msg=engine)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_float32_engines_agree_within_float32_rounding(setting, reduction, tmp_path):
    # The seeds' dtype: NumPy and BLAS round in a different order (BLAS fuses multiply-adds), and
    # where residuals are small against the predictions a one-ulp difference is amplified, so the
    # float32 NumPy curve matches PyTorch's to 1e-5 relative, its parameters to 1e-6.
    runs = engine_curves(setting, reduction, "float32", tmp_path)
    ref_loss, ref_params = runs["autograd"]
    np.testing.assert_array_equal(runs["lightning"][0], ref_loss)
    loss, params = runs["numpy"]
    meaningful = ref_loss > 1e-9 * ref_loss[0]
    np.testing.assert_allclose(loss[meaningful], ref_loss[meaningful], rtol=1e-5)
    np.testing.assert_allclose(params, ref_params, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("engine", ["lightning", "autograd", "numpy"])
def test_minibatches_are_seeded_and_loss_is_mean_over_batches(engine, tmp_path):
    common = ["data=synthetic", "data.n_samples=10", "batch_size=3", "epochs=5", "lr=0.05", f"engine={engine}"]
    first = run(common + ["seed=1"], tmp_path).history
    again = run(common + ["seed=1"], tmp_path).history
    other = run(common + ["seed=2"], tmp_path).history
    assert first.params == again.params and first.loss == again.loss
    assert first.params[-1] != other.params[-1]  # a different shuffle


def test_minibatch_engines_agree(tmp_path):
    common = ["data=synthetic", "data.n_samples=10", "batch_size=3", "epochs=20", "lr=0.05", "bias=true"]
    ref_loss, ref_params = curves(common + ["engine=autograd"], tmp_path)
    for engine in ("lightning", "numpy"):
        loss, params = curves(common + [f"engine={engine}"], tmp_path)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        np.testing.assert_allclose(params, ref_params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("init", ["default", "normal"])
def test_random_init_is_seeded_and_shared_by_engines(init, tmp_path):
    starts = {
        e: run([f"init={init}", "epochs=1", f"engine={e}", "bias=true", "seed=3"], tmp_path).history.params[0]
        for e in ("lightning", "autograd", "numpy")
    }
    assert starts["lightning"] == starts["autograd"] == starts["numpy"]
    other_seed = run([f"init={init}", "epochs=1", "bias=true", "seed=4"], tmp_path).history.params[0]
    assert len(set(starts["lightning"] + other_seed)) == 4  # every value drawn, none shared across seeds
    if init == "default":  # PyTorch's nn.Linear(1, 1) draws from U(-1, 1): 1 / sqrt(fan_in)
        assert all(-1 <= v <= 1 for v in starts["lightning"])
    assert run([f"init={init}", "epochs=1", "bias=true", "seed=4"], tmp_path).history.params[0] != starts["numpy"]
