"""gdexp.compare on real sweeps run by the harness, checked against MLflow's own client."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import empty_store, gdexp, gdexp_here
from mlflow import MlflowClient

from gdexp import compare
from gdexp.compare import plots, report

pytestmark = pytest.mark.slow  # the module's sweeps are real subprocesses


@pytest.fixture(scope="module")
def store(tmp_path_factory, store_template):
    """Two real sweeps in one store: lr x optimizer (one run diverges), then seeds x optimizer."""
    import os

    folder = tmp_path_factory.mktemp("compare")
    uri = empty_store(folder, store_template)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    env.pop("HYDRA_FULL_ERROR", None)
    # in this process, through gdexp.run's own entry point: the sweeps are data here, not processes
    grid = gdexp_here(["-m", "lr=0.01,0.05,0.2", "optimizer=sgd,adam", "epochs=60"], folder, env)
    assert grid.returncode == 0, grid.stderr
    first = compare.sweeps(uri=uri).loc[0, "run_id"]
    seeds = gdexp_here(["-m", "seed=0,1,2", "init=normal", "optimizer=sgd,adam", "epochs=30", "bias=true"], folder, env)
    assert seeds.returncode == 0, seeds.stderr
    return {"folder": folder, "uri": uri, "env": env, "grid": first, "seeds": compare.sweeps(uri=uri).loc[0, "run_id"]}


def test_table_numbers_equal_mlflow(store):
    runs = compare.select_runs(sweep=store["grid"], uri=store["uri"])
    table = compare.runs_table(runs)
    client = MlflowClient(store["uri"])
    assert len(table) == 6
    for run_id, row in table.iterrows():
        record = client.get_run(run_id)
        assert row["run"] == record.info.run_name.removesuffix(",epochs=60")  # what varies: not epochs
        assert row["status"] == record.data.tags["gdexp.status"]
        for metric in ("final_loss", "w", "pred_5", "diverged", "dist_to_opt"):
            assert row[metric] == record.data.metrics[metric], metric
        assert row["lr"] == float(record.data.params["lr"])


@pytest.mark.parametrize("sweep", ["grid", "seeds", "all", "latest"])
def test_rows_read_from_the_tables_equal_mlflows_search(store, monkeypatch, sweep):
    """A SQL store at MLflow's schema is read as rows (four queries), not through search_runs'
    ORM objects: the same frame, value for value, as MLflow's search gives (GDEXP_BULK=0; NaN
    and inf: ``test_bulk``). Its columns come params, metrics, tags; MLflow's search puts a param
    only later runs have (adam's betas) after the first run's metrics."""
    which = store.get(sweep, sweep)
    fast = compare.select_runs(sweep=which, uri=store["uri"])
    monkeypatch.setenv("GDEXP_BULK", "0")
    slow = compare.select_runs(sweep=which, uri=store["uri"])
    assert len(fast) == len(slow) > 0
    kinds = [c.split(".")[0] for c in fast.columns if c.startswith(("params.", "metrics.", "tags."))]
    assert kinds == sorted(kinds, key=["params", "metrics", "tags"].index)
    assert fast["metrics.final_loss"].isna().sum() == slow["metrics.final_loss"].isna().sum()
    pd.testing.assert_frame_equal(fast.sort_index(axis=1), slow.sort_index(axis=1), check_dtype=False)
    slow_parents = compare.sweeps(uri=store["uri"])
    monkeypatch.delenv("GDEXP_BULK")
    fast_parents = compare.sweeps(uri=store["uri"])
    assert fast_parents["run_id"].tolist() == slow_parents["run_id"].tolist()
    pd.testing.assert_frame_equal(fast_parents.sort_index(axis=1), slow_parents.sort_index(axis=1), check_dtype=False)


def test_only_varying_params_by_default(store):
    runs = compare.select_runs(sweep=store["grid"], uri=store["uri"])
    table = compare.runs_table(runs)
    metrics = {"final_loss", "w", "pred_5", "diverged", "epochs_to_converge", "dist_to_opt"}
    metrics |= {"lr_max_stable", "lr_optimal"}  # the theory, beside every run
    assert set(table.columns) - metrics == {"run", "status", "lr", "optimizer.name"}
    wide = compare.runs_table(runs, all_columns=True)
    assert {"epochs", "data.name", "bias", "seed", "engine"} <= set(wide.columns)


def test_latest_sweep_is_the_newest(store):
    latest = compare.select_runs(uri=store["uri"])
    assert len(latest) == 6 and set(latest["tags.gdexp.sweep"]) == {store["seeds"]}
    assert len(compare.select_runs(sweep="all", uri=store["uri"])) == 12
    assert len(compare.select_runs(sweep="all", filter="params.lr = '0.2'", uri=store["uri"])) == 2


def test_pivot_has_grid_shape_and_values(store):
    runs = compare.select_runs(sweep=store["grid"], uri=store["uri"])
    grid = compare.pivot(runs, "lr", "optimizer.name", "final_loss")
    assert grid.shape == (3, 2)
    assert list(grid.index) == [0.01, 0.05, 0.2] and list(grid.columns) == ["adam", "sgd"]
    for _, run in runs.iterrows():
        assert grid.loc[float(run["params.lr"]), run["params.optimizer.name"]] == run["metrics.final_loss"]
    worst = compare.pivot(runs, "optimizer.name", "lr", "final_loss", agg="max")
    assert worst.loc["sgd", 0.2] > 1e12  # the diverged run


def test_group_by_aggregates_seeds(store):
    runs = compare.select_runs(sweep=store["seeds"], uri=store["uri"])
    grouped = compare.group_table(runs, ["optimizer.name"])
    assert list(grouped["n"]) == [3, 3]
    adam = runs[runs["params.optimizer.name"] == "adam"]["metrics.final_loss"]
    row = grouped[grouped["optimizer.name"] == "adam"].iloc[0]
    assert row["final_loss_mean"] == pytest.approx(adam.mean())
    assert row["final_loss_std"] == pytest.approx(adam.std())


def test_every_format_parses(store):
    table = compare.sort_table(
        compare.runs_table(compare.select_runs(sweep=store["grid"], uri=store["uri"])), "final_loss"
    )
    parsed = pd.read_csv(io.StringIO(compare.render(table, "csv")))
    assert len(parsed) == 6 and parsed["final_loss"].iloc[0] == table["final_loss"].iloc[0]
    records = json.loads(compare.render(table, "json"))
    assert len(records) == 6 and records[0]["run"] == table["run"].iloc[0]
    html = compare.render(table, "html")
    assert "<table" in html and html.count('class="diverged"') == 1
    latex = compare.render(table, "latex")
    assert "\\begin{tabular}" in latex and "\\end{tabular}" in latex
    md = compare.render(table, "md").splitlines()
    assert md[0].startswith("| run | status |") and set(md[1]) <= set("|-: ") and len(md) == 8
    assert sum("**diverged**" in line for line in md) == 1
    text = compare.render(table, "text")
    assert sum("diverged !" in line for line in text.splitlines()) == 1


def test_sort_and_top(store):
    table = compare.runs_table(compare.select_runs(sweep=store["grid"], uri=store["uri"]))
    top = compare.sort_table(table, "final_loss", desc=True, top=2)
    assert len(top) == 2 and top["final_loss"].iloc[0] == table["final_loss"].max()


def test_plots_carry_one_line_per_run(store):
    runs = compare.select_runs(sweep=store["grid"], uri=store["uri"])
    history = compare.histories(runs, store["uri"])
    assert len(history) == sum(int(m) + 1 for m in runs["metrics.epochs_run"])
    fig = plots.curves(runs, history, by="optimizer.name")
    assert len(fig.axes[0].get_lines()) == 6
    # Two axes at once: colour by optimizer, line style by lr (the other axis that varies), so
    # that three lrs per optimizer are told apart; the legend reads each axis once.
    drawn = {(ln.get_color(), ln.get_linestyle()) for ln in fig.axes[0].get_lines()}
    assert len(drawn) == 6 and len({c for c, _ in drawn}) == 2 and len({s for _, s in drawn}) == 3
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "optimizer.name=sgd",
        "optimizer.name=adam",
        "lr=0.01",
        "lr=0.05",
        "lr=0.2",
    ]
    default = plots.curves(runs, history)  # no --by: the two axes that vary, the first as colour
    assert len({(ln.get_color(), ln.get_linestyle()) for ln in default.axes[0].get_lines()}) == 6
    assert fig.axes[0].get_yscale() == "log"
    heat = plots.heatmap(runs, "lr", "optimizer.name")
    assert heat.axes[0].images[0].get_array().shape == (3, 2)

    bias_runs = compare.select_runs(sweep=store["seeds"], uri=store["uri"])
    w = plots.weights(bias_runs, compare.histories(bias_runs, store["uri"]))
    assert len(w.axes) >= 2  # parameters against epoch, and the (w, b) path over the contours
    lines = [ln for ln in w.axes[0].get_lines() if ln.get_linestyle() == "-"]
    dashed = [ln for ln in w.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(lines) == 2 and len(dashed) == 2  # w, b and their optimum
    assert w.axes[1].collections  # the loss contours


def test_cli_writes_tables_and_pngs(store, tmp_path):
    def cli(*args: str):
        return gdexp(list(args), tmp_path, store["env"], module="gdexp.compare")

    out = cli("table", "--sweep", store["grid"], "--format", "csv", "--out", str(tmp_path / "t.csv"))
    assert out.returncode == 0, out.stderr
    assert len(pd.read_csv(tmp_path / "t.csv")) == 6
    pivot = cli("table", "--sweep", store["grid"], "--pivot", "lr", "optimizer.name", "--format", "md")
    assert pivot.returncode == 0 and pivot.stdout.count("\n") == 5, pivot.stdout + pivot.stderr
    for kind in (["--kind", "curves", "--by", "lr"], ["--kind", "heatmap", "--pivot", "lr", "optimizer.name"]):
        res = cli("plot", "--sweep", store["grid"], *kind, "--out", str(tmp_path / "png"))
        assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["curves.png", "heatmap_final_loss.png"]
    # Without --out, plots and the report go under outputs/, beside the jobs' own (a checkout
    # ignores it): nothing new in the working directory itself.
    before = {p.name for p in tmp_path.iterdir()}
    for args in (["plot", "--kind", "curves"], ["report"]):
        res = cli(*args, "--sweep", store["grid"])
        assert res.returncode == 0 and res.stdout.startswith("wrote outputs/"), res.stdout + res.stderr
    assert {p.name for p in tmp_path.iterdir()} - before <= {"outputs"}
    assert (tmp_path / "outputs" / "plots" / "curves.png").is_file()
    assert [p.name for p in (tmp_path / "outputs").glob("report-*.html")] == [f"report-{store['grid'][:8]}.html"]


def test_sweeps_count_their_runs_and_say_their_status_and_directory(store, capsys):
    """Each sweep's line counts the child runs the store holds (a continued study showed only its
    last command's jobs), with its status and directory (the same grid run twice reads the same
    otherwise); a table of every sweep's runs says which sweep each run is of."""
    from gdexp.compare import cli

    found = compare.sweeps(uri=store["uri"])
    assert found["runs"].tolist() == [6, 6]
    cli.main(["sweeps", "--tracking-uri", store["uri"]])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, (_, row) in zip(lines, found.iterrows()):
        assert line.startswith(row["run_id"]) and "  FINISHED  6 runs  sweep " in line
        assert line.endswith(f"({row['tags.gdexp.sweep_dir']})")
    every = compare.runs_table(compare.select_runs(sweep="all", uri=store["uri"]))
    assert sorted(set(every["sweep"])) == sorted(r[:8] for r in found["run_id"])
    assert "sweep" not in compare.runs_table(compare.select_runs(sweep=store["grid"], uri=store["uri"]))


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["table", "--experiment", "nope"], "--experiment=nope"),
        (["table", "--sweep", "0123456789abcdef"], "--sweep=0123456789abcdef"),
        (["table", "--sort", "nope"], "--sort=nope"),
        (["table", "--pivot", "lr", "nope"], "--pivot=nope"),
        (["table", "--filter", "params.lr >< 1"], "--filter="),
        (["plot", "--kind", "heatmap"], "--kind=heatmap"),
        (["table", "--top", "-1"], "argument --top"),
        (["table", "--out", "/dev/null/t.csv"], "--out=/dev/null/t.csv"),
        (["plot", "--out", "/dev/null/plots"], "--out=/dev/null/plots"),
    ],
)
def test_bad_selector_is_one_line(store, args, key):
    res = gdexp(args, store["folder"], store["env"], module="gdexp.compare")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"gdexp-compare: error: {key}") and "allowed:" in lines[0]


def test_each_run_logs_its_loss_curve(store):
    client = MlflowClient(store["uri"])
    for run_id in compare.select_runs(sweep=store["grid"], uri=store["uri"])["run_id"]:
        assert "loss_curve.png" in {a.path for a in client.list_artifacts(run_id)}


CHROMIUM = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGE_CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.insertAdjacentHTML('beforeend', `<p id="imgcheck">${ok}/${imgs.length}</p>`);
});</script></body>"""


WIDTH_CHECK = """<script>window.addEventListener('load', () => {
  const table = document.querySelector('table.gdexp-table').getBoundingClientRect().width;
  const page = document.documentElement.scrollWidth;
  document.body.insertAdjacentHTML('beforeend', `<p id="width">${page} ${table}</p>`);
});</script></body>"""


def test_report_renders_in_chromium_and_is_an_artifact_of_the_parent(store, tmp_path):
    from matplotlib.image import imread

    path = report.build(sweep=store["grid"], uri=store["uri"], out=tmp_path / "report.html")
    page = path.read_text()
    assert page.count("<img") == 3 and "data:image/png;base64," in page and "<table" in page
    assert 'src="http' not in page  # self-contained

    client = MlflowClient(store["uri"])
    assert "report.html" in {a.path for a in client.list_artifacts(store["grid"])}

    probe = tmp_path / "probe.html"  # the same page with a script that counts loaded images
    probe.write_text(page.replace("</body>", IMAGE_CHECK))
    profile = ["--user-data-dir=" + str(tmp_path / "chrome")]
    dom = subprocess.run(
        [*CHROMIUM, *profile, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert '<p id="imgcheck">3/3</p>' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*CHROMIUM, *profile, "--window-size=1200,2400", f"--screenshot={shot}", path.as_uri()],
        capture_output=True,
        timeout=120,
    )
    pixels = imread(shot)
    assert pixels.shape[0] == 2400 and np.std(pixels[..., :3]) > 0.05  # not blank

    # The widest table of the two sweeps (w, b, a prediction, seeds) fits a 1,400 px window: run
    # names show only what varies, so the page has no horizontal scroll.
    wide = report.build(sweep=store["seeds"], uri=store["uri"], out=tmp_path / "seeds.html").read_text()
    assert ">seed=0,optimizer=sgd<" in wide  # not init=normal,epochs=30,bias=true on every row
    probe.write_text(wide.replace("</body>", WIDTH_CHECK))
    dom = subprocess.run(
        [*CHROMIUM, *profile, "--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    page_width, table_width = map(float, dom.stdout.split('<p id="width">')[-1].split("<")[0].split())
    assert page_width <= 1400 and table_width <= 1340, (page_width, table_width)  # the page's own max-width


def test_run_names_show_only_what_varies():
    names = [
        "lr=0.09145320282946535,data=line_intercept,bias=true,epochs=300",
        "lr=0.10830211,data=line_intercept,bias=true,epochs=300",
        "lr=0.0914532028,data=line_intercept,bias=true,epochs=300",
    ]
    assert compare.shown_names(names[:2]) == ["lr=0.09145", "lr=0.1083"]
    # Two lrs one at 4, 6 and 9 digits: every name as written, less what every run shares.
    assert compare.shown_names(names) == ["lr=0.09145320282946535", "lr=0.10830211", "lr=0.0914532028"]
    assert compare.shown_names(["data.x=[1,2],lr=0.1", "data.x=[1,3],lr=0.1"]) == ["data.x=[1,2]", "data.x=[1,3]"]
    assert compare.shown_names(["lr=0.1,epochs=5"]) == ["lr=0.1,epochs=5"]  # one run: its whole name


def test_the_theory_is_in_every_table_and_all_columns_shows_every_metric(store):
    runs = compare.select_runs(sweep=store["grid"], uri=store["uri"])
    table = compare.runs_table(runs)
    assert {"lr_optimal", "lr_max_stable"} <= set(table.columns)
    assert table["lr_optimal"].notna().all() and (table["lr_optimal"] < table["lr_max_stable"]).all()
    everything = compare.runs_table(runs, all_columns=True)
    assert {c[8:] for c in runs.columns if c.startswith("metrics.")} <= set(everything.columns)
