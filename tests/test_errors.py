"""Bad input: one line naming the key and the value, a non-zero exit, no traceback, no RUNNING run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import all_runs, gdexp, gdexp_here

BAD_INPUTS = {  # arguments -> the key the one line must name
    "negative lr": (["lr=-1"], "lr"),
    "non-numeric lr": (["lr=abc"], "lr"),
    "NaN lr": (["lr=nan"], "lr"),
    "zero epochs": (["epochs=0"], "epochs"),
    "fractional epochs": (["epochs=1.5"], "epochs"),
    "unknown optimizer": (["optimizer=foo"], "optimizer"),
    "bias maybe": (["bias=maybe"], "bias"),
    "unknown init": (["init=foo"], "init"),
    "unknown engine": (["engine=jax"], "engine"),
    "unknown data": (["data=nope"], "data"),
    "missing CSV": (["data=csv", "data.path=missing.csv"], "data.path"),
    "empty CSV": (["data=csv", "data.path=empty.csv"], "data.path"),
    "non-numeric CSV": (["data=csv", "data.path=words.csv"], "data.path"),
    "CSV with NaN": (["data=csv", "data.path=holes.csv"], "data.path"),
    "CSV without the target column": (["data=csv", "data.path=two.csv", "data.target=q"], "data.target"),
    "predict_at of the wrong width": (["data=csv", "data.path=two.csv", "predict_at=[1,2,3]"], "predict_at"),
    "unreachable tracking server": (["tracking.uri=http://127.0.0.1:9"], "tracking.uri"),
    "tracking store in a missing folder": (["tracking.uri=sqlite:////nonexistent/dir/x.db"], "tracking.uri"),
    "zero batch size": (["batch_size=0"], "batch_size"),
    "betas out of range": (["optimizer=adam", "optimizer.betas=[0.9,2]"], "optimizer.betas"),
    "numpy engine with adam": (["engine=numpy", "optimizer=adam"], "engine"),
    "unknown key": (["lrr=0.1"], "lrr"),
    "gpu on a CPU machine": (["accelerator=gpu"], "accelerator"),
    "momentum of 1.5": (["optimizer=momentum", "optimizer.momentum=1.5"], "optimizer.momentum"),
    "unknown loss reduction": (["loss_reduction=max"], "loss_reduction"),
    "bad value inside a sweep": (["-m", "lr=0.1,-1"], "lr"),
    "bad CSV inside a sweep": (["-m", "data=line,csv", "data.path=missing.csv"], "data.path"),
    # bad numbers: one line before training, with the limit where memory or dtype sets it
    "NaN slope": (["data.slope=nan"], "data.slope"),
    "infinite intercept": (["data=line_intercept", "data.intercept=inf"], "data.intercept"),
    "an infinite x": (["data.x=[1,inf]"], "data.x"),
    "a CSV value of 1e300": (["data=csv", "data.path=huge.csv"], "data.path"),
    "a CSV value past float32": (["data=csv", "data.path=f32.csv"], "data.path"),
    "a target that is no column name": (["data=csv", "data.path=two.csv", "data.target=5"], "data.target"),
    "a seed past 32 bits": (["seed=18446744073709551616"], "seed"),
    "a model too big for its Hessian": (
        ["data=synthetic", "data.n_features=100000", "data.n_samples=2"],
        "data.n_features",
    ),
    "batched epochs past memory": (["-m", "hydra/launcher=batched", "epochs=1000000000000"], "epochs"),
    # sweep checks that used to become warnings, and launcher settings
    "a seed past 32 bits inside a sweep": (["-m", "seed=0,18446744073709551616", "epochs=5"], "seed"),
    "joblib without workers": (
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "lr=0.1,0.2"],
        "hydra.launcher.n_jobs",
    ),
    "batched curve points below 100": (
        ["-m", "hydra/launcher=batched", "hydra.launcher.curve_points=10"],
        "hydra.launcher.curve_points",
    ),
    # unknown keys, with or without +, and the near miss named
    "an unknown key added with +": (["+foo=1"], "foo"),
    "an unknown tracking key added with +": (["+tracking.foo=1"], "tracking.foo"),
    "a near miss added with +": (["+lrr=1"], "lrr"),
    "a nested value of the wrong type": (["optimizer=momentum", "optimizer.momentum=abc"], "optimizer.momentum"),
    "a 600-character experiment name": ([f"tracking.experiment={'e' * 600}"], "tracking.experiment"),
    # CSV files that used to load wrong
    "duplicate CSV columns": (["data=csv", "data.path=dup.csv"], "data.path"),
    "a true/false CSV column": (["data=csv", "data.path=bool.csv"], "data.path"),
    "a ragged CSV row": (["data=csv", "data.path=ragged.csv"], "data.path"),
}
# What the one line must also say, where the case is about the wording.
SAYS = {
    "a near miss added with +": "did you mean lr?",
    "a nested value of the wrong type": "allowed: a number",
    "a CSV value past float32": "1e+39 on line 2",
    "a model too big for its Hessian": "4095",
    "batched epochs past memory": "10,000,000",
}


def _write_csvs(folder: Path) -> None:
    (folder / "empty.csv").write_text("")
    (folder / "words.csv").write_text("x,y\n1,2\n2,abc\n")
    (folder / "holes.csv").write_text("x,y\n1,2\n2,\n")
    (folder / "two.csv").write_text("a,b,y\n1,2,3\n2,3,5\n")
    (folder / "huge.csv").write_text("x,y\n1,2\n2,1e300\n")
    (folder / "f32.csv").write_text("x,y\n1,1e39\n2,4\n")
    (folder / "dup.csv").write_text("x,x,y\n1,2,3\n2,3,5\n")
    (folder / "bool.csv").write_text("x,y\n1,true\n2,false\n")
    (folder / "ragged.csv").write_text("x,y\n1,2\n2,3,4\n")


@pytest.mark.slow
def test_bad_inputs_give_one_line_naming_the_key(tmp_path, cli_env):
    _write_csvs(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    # In this process, through the same entry point (starting Python and torch is 5 s a case);
    # the first case also as the real command, whose exit status and stderr are the user's.
    results = [(case, BAD_INPUTS[case][1], gdexp_here(BAD_INPUTS[case][0], tmp_path, cli_env)) for case in BAD_INPUTS]
    first = next(iter(BAD_INPUTS))
    results.append((first, BAD_INPUTS[first][1], gdexp(BAD_INPUTS[first][0], tmp_path, cli_env)))
    assert [case for case, _, _ in results] == [*BAD_INPUTS, first]
    for case, key, result in results:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (case, result.returncode, result.stderr)
        assert len(lines) == 1, (case, result.stderr)
        assert lines[0].startswith(f"gdexp: error: {key}"), (case, lines[0])
        assert "allowed:" in lines[0], (case, lines[0])
        assert "Traceback" not in result.stderr + result.stdout, case
        assert "Epoch" not in result.stdout and "Prediction" not in result.stdout, case  # nothing trained
        assert SAYS.get(case, "") in lines[0], (case, lines[0])
    assert [r.info.run_name for r in all_runs(store)] == []  # no MLflow run made, not even a sweep's parent
    # Nor a run directory: Hydra's outputs/DATE/TIME of a refused single run is gone again.
    assert not (tmp_path / "outputs").exists() or not [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
