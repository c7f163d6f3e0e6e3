"""Value checks of a composed config, one per key, and each dataset loader's checks of its keys."""

from __future__ import annotations

import pytest
from conftest import OPTIMIZERS, make_config
from omegaconf import OmegaConf

from gdexp.checks import validate
from gdexp.config import ConfigError, group_options
from gdexp.explain import one_line
from gdexp.training.data import LOADERS, load_data

BAD = [  # overrides -> the key the error names
    (["lr=-0.1"], "lr"),
    (["lr=nan"], "lr"),
    (["lr=inf"], "lr"),
    (["epochs=0"], "epochs"),
    (["batch_size=0"], "batch_size"),
    (["init_std=0"], "init_std"),
    (["seed=-1"], "seed"),
    (["converge_tol=-1"], "converge_tol"),
    (["diverge_above=0"], "diverge_above"),
    (["tracking.flush_seconds=-1"], "tracking.flush_seconds"),
    (["tracking.experiment= "], "tracking.experiment"),
    (["predict_at=[inf]"], "predict_at"),
    (["optimizer=momentum", "optimizer.momentum=1"], "optimizer.momentum"),
    (["optimizer=sgd", "optimizer.dampening=2"], "optimizer.dampening"),
    (["optimizer=nesterov", "optimizer.momentum=0"], "optimizer.momentum"),
    (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas"),
    (["optimizer=rmsprop", "optimizer.alpha=1.5"], "optimizer.alpha"),
    (["optimizer=adam", "optimizer.eps=0"], "optimizer.eps"),
    (["optimizer=adagrad", "optimizer.lr_decay=-1"], "optimizer.lr_decay"),
    (["optimizer=sgd", "optimizer.weight_decay=-1"], "optimizer.weight_decay"),
    (["engine=numpy", "optimizer=momentum"], "engine"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_names_its_key_and_what_is_allowed(overrides, key):
    with pytest.raises(ConfigError) as caught:
        validate(make_config(overrides))
    assert caught.value.key == key
    line = one_line(caught.value)
    assert line.startswith(f"{key}=") and "; allowed: " in line and "\n" not in line


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_shipped_optimizer_passes_with_its_defaults(optimizer):
    validate(make_config([f"optimizer={optimizer}"]))


def test_every_shipped_dataset_has_a_loader_and_loads(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,3\n2,3,5\n4,1,6\n")
    for name in group_options("data"):
        extra = [f"data.path={tmp_path / 'd.csv'}"] if name == "csv" else []
        data = load_data(make_config([f"data={name}", *extra]).data, tmp_path)
        assert name in LOADERS and data.X.shape[0] == data.Y.shape[0] >= 1


def test_the_seeds_line_data():
    data = load_data(make_config(["data=line_intercept"]).data)
    assert data.X[:, 0].tolist() == [1, 2, 3, 4] and data.Y[:, 0].tolist() == [5, 7, 9, 11]


BAD_DATA = [
    (["data=line", "data.x=[]"], "data.x"),
    (["data=line", "data.x=[1,inf]"], "data.x"),
    (["data=line", "data.slope=nan"], "data.slope"),
    (["data=line_intercept", "data.intercept=inf"], "data.intercept"),
    (["data=synthetic", "data.n_samples=0"], "data.n_samples"),
    (["data=synthetic", "data.n_features=0"], "data.n_features"),
    (["data=synthetic", "data.n_features=2", "data.weights=[1]"], "data.weights"),
    (["data=synthetic", "data.noise=-1"], "data.noise"),
    (["data=csv", "data.path=missing.csv"], "data.path"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_DATA, ids=[" ".join(o) for o, _ in BAD_DATA])
def test_a_loader_rejects_bad_values_of_its_own_keys(overrides, key, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_data(make_config(overrides).data, tmp_path)
    assert caught.value.key == key


def test_an_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(ConfigError) as caught:
        load_data(OmegaConf.create({"name": "sine"}))
    assert caught.value.key == "data.name" and "line_intercept" in str(caught.value) and "csv" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["lr=abc"], "lr=abc: not a number; allowed: a number"),
        (["epochs=1.5"], "epochs=1.5: not an integer; allowed: an integer"),
        (["bias=maybe"], "bias=maybe: not a boolean; allowed: true or false"),
        (["optimizer=adamm"], "optimizer=adamm: no such option; did you mean adam?; allowed: adagrad, adam, "),
        (["data=lines"], "data=lines: no such option; did you mean line?; allowed: csv, line, "),
    ],
)
def test_composition_errors_are_said_in_gdexps_words(overrides, line):
    with pytest.raises(Exception) as err:
        make_config(overrides)
    assert one_line(err.value, overrides).startswith(line)


def test_the_help_page_lists_the_search_sweeper():
    from gdexp.config import help_template

    assert "hydra/sweeper   gdexp (the default: every job of the grid), optuna (a search" in help_template()
