"""The Figure 2 sweep: planning (skip, resume, extend), a failing run reported without stopping
the others, the figure and table from whatever the runs wrote, and the Dask path on a local cluster."""
import dataclasses
import json
import os
import re
import time

import numpy as np
import pytest

from npvae import sweep
from npvae.config import TrainConfig
from npvae.train import train

from .helpers import run_sweep_script
from .test_examples import have
from .test_train import toy_data


def base_config(tmp_path, **kw):
    return TrainConfig(**{**dict(nz=2, hidden=(8,), samples=400, batch_size=20, checkpoint_seconds=1e9,
                                 progress=False, figures=False, warmup=2, out=str(tmp_path)), **kw})


def test_plan_orders_the_informative_cells_first_and_skips_resumes_extends(tmp_path):
    base = base_config(tmp_path, dataset="mnist")
    specs = sweep.plan_sweep(base, str(tmp_path), (3, 5, 20))
    assert [s.name for s in specs] == ["aevb_nz20", "wakesleep_nz20", "aevb_nz3", "wakesleep_nz3",
                                       "aevb_nz5", "wakesleep_nz5"]
    assert {s.action for s in specs} == {"new"}
    cfg = TrainConfig.from_dict(specs[0].config)
    assert (cfg.algorithm, cfg.nz, cfg.out) == ("aevb", 20, os.path.join(str(tmp_path), "aevb_nz20"))
    data = toy_data()
    done = dataclasses.replace(base, nz=2, out=os.path.join(str(tmp_path), "aevb_nz2"))
    train(done, data=data, log=lambda *_: None)                                  # finished at 400
    half = dataclasses.replace(done, algorithm="wakesleep", out=os.path.join(str(tmp_path), "wakesleep_nz2"))
    train(half, data=data, callback=lambda learner, st: st.steps == 5, log=lambda *_: None)
    actions = {s.name: s.action for s in sweep.plan_sweep(base, str(tmp_path), (2,))}
    assert actions == {"aevb_nz2": "skip", "wakesleep_nz2": "resume"}
    actions = {s.name: s.action for s in sweep.plan_sweep(base, str(tmp_path), (2,), budget=800)}
    assert actions == {"aevb_nz2": "resume", "wakesleep_nz2": "resume"}          # a larger budget extends
    # a finished run of another experiment (another step size) is not taken for this sweep's: it is
    # planned as a resume, and running it reports the difference as a failure
    other = dataclasses.replace(base, lr=0.1)
    [spec] = [s for s in sweep.plan_sweep(other, str(tmp_path), (2,)) if s.name == "aevb_nz2"]
    assert spec.action == "resume" and sweep.differences(spec.config) == ["lr"]
    result = sweep.run_spec(spec)
    assert result["status"] == "failed" and "differs from this sweep in lr" in result["reason"]
    assert sweep.differences(dataclasses.replace(done, samples=800)) == []       # a budget is not an experiment
    # a run whose step size the probe picked is the sweep's own, whichever step size it picked
    probed = dataclasses.replace(base, lr_probe=100, out=str(tmp_path / "probed"))
    train(probed, data=data, log=lambda *_: None)
    assert sweep.differences(probed) == [] and sweep.differences(dataclasses.replace(probed, nz=3)) == ["nz"]
    [spec] = sweep.plan_runs({"probed": probed})
    assert spec.action == "skip"


def test_run_spec_extends_a_run_and_reports_a_failure_instead_of_raising(tmp_path, monkeypatch):
    import npvae.train
    def load(config):                     # the nz=3 run gets a NaN in its data: it must fail, alone
        data = toy_data(dynamic=False)
        if config.nz == 3:
            data.train_x[:, 0] = np.nan
        return data
    monkeypatch.setattr(npvae.train, "_load_data", load)
    base = base_config(tmp_path)
    [spec] = [s for s in sweep.plan_sweep(base, str(tmp_path), (2,), ("aevb",))]
    assert sweep.run_spec(spec)["status"] == "finished"
    [spec] = sweep.plan_sweep(base, str(tmp_path), (2,), ("aevb",), budget=800)
    result = sweep.run_spec(spec)
    assert result["status"] == "finished" and result["samples"] == 800
    bad = sweep.RunSpec("aevb_nz3", {**spec.config, "nz": 3, "out": str(tmp_path / "aevb_nz3")}, "new")
    result = sweep.run_spec(bad)                                                # diverges: reported, not raised
    assert result["status"] == "failed" and "non-finite" in result["reason"]
    # a worker without the data (a Dask worker: a local sweep checks first) reports it in one line,
    # and a new run's folder, which nothing was written into, is not left behind
    from npvae.data import DataNotFoundError

    def nowhere(config):
        raise DataNotFoundError("Could not find 'frey_rawface.mat'.\n  Looked in: nowhere")
    monkeypatch.setattr(npvae.train, "_load_data", nowhere)
    new = sweep.RunSpec("aevb_nz4", {**spec.config, "nz": 4, "out": str(tmp_path / "aevb_nz4")}, "new")
    result = sweep.run_spec(new)
    assert result["status"] == "failed" and " not found: looked for " in result["reason"]
    assert "\n" not in result["reason"] and not (tmp_path / "aevb_nz4").exists()


def test_a_sweep_with_snapshots_turns_them_on_for_the_runs_it_resumes_never_off(tmp_path, monkeypatch):
    import npvae.train
    monkeypatch.setattr(npvae.train, "_load_data", lambda config: toy_data(dynamic=False))
    base = base_config(tmp_path)
    [spec] = sweep.plan_sweep(base, str(tmp_path), (2,), ("aevb",))
    assert sweep.run_spec(spec)["status"] == "finished"
    folder = tmp_path / "aevb_nz2" / "snapshots"
    assert not folder.exists()
    for snapshots, budget in ((True, 800), (False, 1200)):
        [spec] = sweep.plan_sweep(dataclasses.replace(base, snapshots=snapshots), str(tmp_path), (2,), ("aevb",),
                                  budget=budget)
        assert spec.action == "resume" and sweep.run_spec(spec)["status"] == "finished"
    assert sorted(os.listdir(folder)) == ["checkpoint_000000000800.npz", "checkpoint_000000001200.npz"]


def test_table_and_figure_show_a_half_finished_sweep(tmp_path):
    base = base_config(tmp_path, dataset="frey", samples=12_000)
    data = toy_data()
    train(dataclasses.replace(base, nz=5, out=str(tmp_path / "aevb_nz5")), data=data, log=lambda *_: None)
    json.dump({"wakesleep_nz5": "worker died"}, open(tmp_path / "failures.json", "w"))
    rows, text = sweep.redraw(str(tmp_path), "frey", (2, 5))
    cell = {(r["algorithm"], r["nz"]): r for r in rows}
    assert cell[("aevb", 5)]["samples_reached"] == 12_000 and cell[("aevb", 5)]["paper_test"] == 1110.0
    assert cell[("wakesleep", 5)]["status"] == "failed: worker died"
    assert cell[("aevb", 2)]["status"] == "not started"
    assert "| frey | 5 | aevb | 12,000 |" in text and (tmp_path / "fig2_table.csv").stat().st_size > 100
    assert (tmp_path / "fig2.png").stat().st_size > 5000


def test_smoke_sweep_on_a_dask_local_cluster(tmp_path):
    """The whole pipeline through Dask: a LocalCluster bound to 127.0.0.1, two processes."""
    distributed = pytest.importorskip("distributed")
    if not have("frey_rawface.mat"):
        pytest.skip("frey_rawface.mat not found: set NPVAE_DATA_DIR")
    base = base_config(tmp_path, dataset="frey", hidden=(20,), samples=2000, batch_size=100, eval_max=200)
    specs = sweep.plan_sweep(base, str(tmp_path), (2,))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True,
                                  dashboard_address=None) as cluster:
        results = sweep.run_sweep(specs, str(tmp_path), lambda: sweep.redraw(str(tmp_path), "frey", (2,)),
                                  scheduler=cluster.scheduler_address, log=lambda *_: None)
    assert {r["status"] for r in results.values()} == {"finished"}
    rows = sweep.collect(str(tmp_path), "frey", (2,))
    assert all(r["samples_reached"] == 2000 and np.isfinite(r["test"]) for r in rows)
    again = sweep.plan_sweep(base, str(tmp_path), (2,))
    assert {s.action for s in again} == {"skip"}                                # re-running skips them


@pytest.mark.parametrize("dataset,needs", [("mnist", "mnist.pkl.gz"), ("frey", "frey_rawface.mat")])
def test_figure2_smoke(dataset, needs, tmp_path):
    """`python examples/figure2.py --smoke`: both algorithms, two Nz, a local pool of two jobs."""
    if not have(needs):
        pytest.skip(f"{needs} not found: set NPVAE_DATA_DIR")
    out = tmp_path / "sweep"
    stdout, rows = run_sweep_script("figure2.py", out, f"--dataset={dataset}", "--smoke", "--status_every=0.5",
                                    table="fig2_table")
    assert re.search(r"^\[\d\d:\d\d\] (aevb|wakesleep)_nz\d+: ", stdout, re.M)         # progress lines
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert {r["algorithm"] for r in rows} == {"aevb", "wakesleep"} and (out / "fig2.png").stat().st_size > 5000
    again, _ = run_sweep_script("figure2.py", out, f"--dataset={dataset}", "--smoke")
    assert again.count(": skip") == 4


@pytest.mark.parametrize("how", ["the sweep process", "the terminal's process group"])
def test_ctrl_c_stops_the_sweep_with_checkpoints_and_starts_nothing_new(how, tmp_path):
    """SIGINT to the sweep alone (kill -INT PID) or to its whole group (Ctrl-C in a terminal): the
    running run writes a checkpoint and stops, the runs not started stay unstarted, no traceback,
    and the same command resumes."""
    import signal
    import subprocess
    import sys
    import time
    if not have("frey_rawface.mat"):
        pytest.skip("frey_rawface.mat not found: set NPVAE_DATA_DIR")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "sweep"
    cmd = [sys.executable, os.path.join(root, "examples", "figure2.py"), "--dataset=frey", "--smoke", "--jobs=1",
           "--nz=2,5", "--samples=5e7", f"--out={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, MPLBACKEND="Agg"), start_new_session=True)
    first = out / "aevb_nz5" / "summary.json"
    deadline = time.time() + 120
    while not (first.exists() and json.load(open(first)).get("status") == "running"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(2.0)                                          # a few steps into the run
    if how == "the sweep process":
        proc.send_signal(signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert "interrupted: checkpoints written; continue with:" in stdout
    summary = json.load(open(first))
    assert summary["status"] == "interrupted" and 0 < summary["samples"] < 5e7
    assert (out / "aevb_nz5" / "checkpoint.npz").exists()
    assert not any((out / name).exists() for name in ("wakesleep_nz5", "aevb_nz2", "wakesleep_nz2"))
    actions = {s.name: s.action for s in sweep.plan_sweep(
        TrainConfig(dataset="frey", samples=50_000_000), str(out), (2, 5))}
    assert actions == {"aevb_nz5": "resume", "wakesleep_nz5": "new", "aevb_nz2": "new", "wakesleep_nz2": "new"}


def test_the_legend_names_every_curve_of_every_panel():
    """The last panel may lack a run that others have (not started yet): the legend, drawn there,
    still names every algorithm's curves, the paper's marker last."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from npvae import plots
    from npvae.sweep import _legend_of_every_panel
    fig, axes = plt.subplots(1, 2)
    full = {"aevb": [[1e5, 1, -150, -151], [1e6, 2, -120, -121]], "wakesleep": [[1e5, 1, -160, -161]]}
    plots.draw_fig2_panel(axes[0], full, {"aevb": (-97, -100)})
    plots.draw_fig2_panel(axes[1], {"aevb": full["aevb"]}, {"aevb": (-97, -100)})
    legend = _legend_of_every_panel(axes, fig)
    assert fig.legends == [legend]
    labels = [t.get_text() for t in legend.get_texts()]
    assert {"AEVB train", "AEVB test", "wake-sleep train", "wake-sleep test"} <= set(labels)
    assert labels[-1].startswith("paper") and len(labels) == len(set(labels))
    plt.close(fig)


def test_a_sweep_of_some_algorithms_shows_the_others_runs_too(tmp_path):
    """--algorithms=mcem on a folder that holds AEVB runs redraws the whole figure: the requested
    algorithms plus any other of the figure's with a run folder there, in the figure's order."""
    from npvae.sweep import FIG3_ALGORITHMS, algorithms_to_show
    assert algorithms_to_show(str(tmp_path / "none"), ("mcem",), FIG3_ALGORITHMS) == ("mcem",)
    (tmp_path / "aevb_n1000").mkdir()
    (tmp_path / "fig3.png").write_bytes(b"")                  # files are not runs
    assert algorithms_to_show(str(tmp_path), ("mcem",), FIG3_ALGORITHMS) == ("aevb", "mcem")
    assert algorithms_to_show(str(tmp_path), ("wakesleep",), FIG3_ALGORITHMS) == ("aevb", "wakesleep")


def test_a_sweep_of_some_nz_shows_every_nz_with_a_run_in_its_folder(tmp_path):
    """--nz=10 on a folder that holds runs of other Nz redraws every panel, in increasing Nz: two
    sweeps of one Nz each into one folder draw the same figure, not each its own panel."""
    from npvae.sweep import ALGORITHMS, nzs_to_show
    assert nzs_to_show(str(tmp_path / "none"), (10,)) == (10,)
    for name in ("wakesleep_nz200", "aevb_nz5", "aevb_nz10", "mcem_nz7", "aevb_nzx", "aevb_nz05"):
        (tmp_path / name).mkdir()
    (tmp_path / "aevb_nz3").write_bytes(b"")                  # a file is not a run
    assert nzs_to_show(str(tmp_path), (10, 20)) == (5, 10, 20, 200)
    assert nzs_to_show(str(tmp_path), (), ALGORITHMS + ("mcem",)) == (5, 7, 10, 200)
    assert nzs_to_show(str(tmp_path), (3,), ("wakesleep",)) == (3, 200)


def test_a_sweeps_redraw_shows_runs_another_sweep_started_after_it(tmp_path):
    """Two sweeps into one folder, each planned before the other's run existed: each redraw looks at
    the folder again, so both draw every run there (Figure 2's Nz and algorithms, Figure 3's
    algorithms), not what the folder held when the sweep was planned."""
    fig2 = _example_plan("figure2")([f"--out={tmp_path}", "--dataset=mnist", "--nz=10", "--algorithms=wakesleep"])
    rows, _ = fig2.redraw()
    assert [(r["nz"], r["algorithm"]) for r in rows] == [(10, "wakesleep")]
    (tmp_path / "aevb_nz200").mkdir()                # the other sweep's run, started since
    rows, _ = fig2.redraw()
    assert [(r["nz"], r["algorithm"]) for r in rows] == [(10, "aevb"), (10, "wakesleep"), (200, "aevb"),
                                                        (200, "wakesleep")]
    fig3_out = tmp_path / "fig3"
    fig3 = _example_plan("figure3")([f"--out={fig3_out}", "--algorithms=mcem", "--n_train=1000"])
    fig3_out.mkdir()
    assert {r["algorithm"] for r in fig3.redraw()[0]} == {"mcem"}
    (fig3_out / "aevb_n1000").mkdir()
    assert {r["algorithm"] for r in fig3.redraw()[0]} == {"aevb", "mcem"}
    (fig3_out / "mcem_n50000").mkdir()                 # another N train, from another sweep
    assert {(r["n_train"], r["algorithm"]) for r in fig3.redraw()[0]} == {
        (1000, "aevb"), (1000, "mcem"), (50000, "aevb"), (50000, "mcem")}


# --------------------------------------------------------------------------- which MNIST protocol

def _example_plan(script):
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(script, os.path.join(root, "examples", f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plan


def _protocols_plan():
    return _example_plan("protocols")


@pytest.mark.parametrize("argv,message", [
    (["--binarize=static"], "choose among them with --protocols"),
    (["--protocols=dynamic,grey"], "--protocols must be among dynamic, static, none"),
    (["--dataset=frey"], "binarization is MNIST's question"),
    (["--static_run=runs/x", "--none_run=runs/x"], "--static_run and --none_run"),
    (["--dynamic_run=runs/protocols/static"], "name one folder"),
    (["--nz=0"], "nz"),
])
def test_the_protocol_sweep_refuses_bad_options_in_one_line(argv, message):
    from npvae.config import ConfigError
    with pytest.raises(ConfigError) as e:
        _protocols_plan()(argv)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_protocol_run_living_in_another_sweep_resumes_there_and_must_be_the_same_run(tmp_path):
    """--dynamic_run=<the Figure 2 sweep's run>: planned as a resume in its own folder, the others
    under the sweep's; a folder whose run differs (here Nz) fails with the difference, untouched."""
    elsewhere = tmp_path / "fig2" / "aevb_nz20"
    mine = base_config(tmp_path, nz=20, out=str(elsewhere))
    train(mine, data=toy_data(), callback=lambda learner, st: st.steps == 3, log=lambda *_: None)
    command = _protocols_plan()([f"--out={tmp_path / 'protocols'}", f"--dynamic_run={elsewhere}", "--hidden=8",
                                 "--samples=400", "--batch_size=20", "--warmup=2", "--jobs=1"])
    specs = {s.name: s for s in command.specs}
    assert [s.name for s in command.specs] == ["dynamic", "static", "none"]
    assert (specs["dynamic"].action, specs["dynamic"].config["out"]) == ("resume", str(elsewhere))
    assert specs["static"].config["out"] == str(tmp_path / "protocols" / "static")
    assert {specs[p].config["binarize"] for p in specs} == {"dynamic", "static", "none"}
    before = (elsewhere / "checkpoint.npz").read_bytes()
    other = sweep.RunSpec("dynamic", {**specs["dynamic"].config, "nz": 3}, "resume")
    result = sweep.run_spec(other)
    assert result["status"] == "failed" and "differs from this sweep in nz" in result["reason"]
    assert (elsewhere / "checkpoint.npz").read_bytes() == before
    # left out of --protocols, the run living elsewhere is drawn and tabulated, not trained
    drawn = _protocols_plan()([f"--out={tmp_path / 'protocols'}", f"--dynamic_run={elsewhere}", "--hidden=8",
                               "--protocols=static,none"])
    assert [s.name for s in drawn.specs] == ["static", "none"]
    rows, _ = drawn.redraw()
    assert [(r["binarize"], r["trained"]) for r in rows] == [("dynamic", 60), ("static", 0), ("none", 0)]


def test_the_protocol_table_and_figure_give_each_gap_beside_the_papers(tmp_path):
    base = base_config(tmp_path, dataset="mnist", nz=20, samples=12_000)
    train(dataclasses.replace(base, out=str(tmp_path / "static")), data=toy_data(), log=lambda *_: None)
    rows, text = sweep.redraw_protocols(str(tmp_path), base)
    cell = {r["binarize"]: r for r in rows}
    static = cell["static"]
    assert static["samples_reached"] == 12_000 and static["gap"] == pytest.approx(static["train"] - static["test"],
                                                                                   abs=0.011)
    assert (static["paper_train"], static["paper_test"], static["paper_gap"]) == (-97.0, -100.0, 3.0)
    assert static["test_vs_paper"] == pytest.approx(static["test"] + 100.0, abs=0.011)
    assert static["train_vs_paper"] == pytest.approx(static["train"] + 97.0, abs=0.011)
    assert cell["none"]["test_vs_paper"] is None                                 # nothing to compare yet
    assert cell["none"]["status"] == "not started" and cell["dynamic"]["samples_reached"] == 0
    assert "| static |" in text and (tmp_path / "protocols_table.csv").exists()
    assert (tmp_path / "protocols.png").stat().st_size > 5000


def test_a_zoom_panel_shows_the_last_decades_once_a_curve_reaches_them(monkeypatch, tmp_path):
    """The protocols figure: curves 1-3 nats apart at 10^8 look alike on a panel from 10^5, so a
    second panel from 10^7 on fits its y axis to them; before any curve gets there it is left out."""
    from npvae import plots
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figures.append(fig), plt.close(fig)))
    samples = np.logspace(5, 8, 31)

    def row(name, end, gap):
        history = [(n, 0.0, end - 50 / np.log10(n / 1e4) ** 2 + gap, end - 50 / np.log10(n / 1e4) ** 2)
                   for n in samples]
        return {"nz": 20, "binarize": name, "history": history, "paper_train": -97.0, "paper_test": -100.0,
                "mark_as": "paper"}
    rows = [row("dynamic", -96.5, 0.1), row("static", -97.1, 2.9)]
    sweep.draw_panels(rows, str(tmp_path / "p.png"), "nz", str, "bound", curve_key="binarize", zoom_from=1e7)
    full, zoomed = figures[-1].axes
    assert zoomed.get_xlim()[0] == 1e7 and zoomed.get_title() == "the same, from $10^{7}$ samples on"
    shown = [v for r in rows for n, _, tr, te in r["history"] if n >= 1e7 for v in (tr, te)] + [-97.0, -100.0]
    low, high = zoomed.get_ylim()
    assert min(shown) - 1 < low < min(shown) and max(shown) < high < max(shown) + 1     # fitted to the last decade
    assert full.get_ylim()[0] < -120 < min(shown)               # the full panel goes down to 10^5's bounds
    short = [{**r, "history": r["history"][:20]} for r in rows]  # to 10^7: nothing to zoom on yet
    sweep.draw_panels(short, str(tmp_path / "p.png"), "nz", str, "bound", curve_key="binarize", zoom_from=1e7)
    assert len(figures[-1].axes) == 1


def test_protocols_smoke(tmp_path):
    """`python examples/protocols.py --smoke`: MNIST Nz = 20 AEVB under the three binarizations."""
    if not (have("mnist.pkl.gz") and have("binarized_mnist_train.amat")):
        pytest.skip("MNIST or Larochelle's binarized MNIST not found: set NPVAE_DATA_DIR")
    out = tmp_path / "protocols"
    _, rows = run_sweep_script("protocols.py", out, "--smoke", table="protocols_table")
    assert [r["binarize"] for r in rows] == ["dynamic", "static", "none"]
    assert {r["status"] for r in rows} == {"finished"} and {r["samples_reached"] for r in rows} == {"20000"}
    for r in rows:
        assert float(r["gap"]) == pytest.approx(float(r["train"]) - float(r["test"]), abs=0.011)
        assert json.load(open(out / r["binarize"] / "config.json"))["binarize"] == r["binarize"]
    assert (out / "protocols.png").stat().st_size > 5000


def test_the_status_lines_give_each_run_in_flight_its_progress_rate_and_time_left(monkeypatch):
    trained = {"runs/a": 1_000, "runs/b": 5_000_000, "runs/q": 0}
    monkeypatch.setattr(sweep, "trained_samples", lambda folder: trained[folder])
    reporter = sweep._StatusReporter(0, print)
    for name, folder, budget in (("aevb_nz20", "runs/a", 1_901_000), ("big", "runs/b", 730_000_000),
                                 ("queued", "runs/q", 1_000_000)):
        reporter.in_flight[name] = sweep.RunSpec(name, {"out": folder, "samples": budget}, "resume")
    first, big, queued = reporter.lines(now=100.0)
    assert first.endswith("aevb_nz20: 1,000 of 1,901,000 samples (0.1%)")         # no rate before a second look
    assert queued.endswith("queued: no checkpoint yet (starting, queued, or on a worker whose folders this "
                           "machine does not see)")
    trained.update({"runs/a": 101_000, "runs/b": 15_000_000})
    second, big, _ = reporter.lines(now=200.0)
    assert second.endswith("aevb_nz20: 101,000 of 1,901,000 samples (5.3%), 1,000 samples/s, about 30 min to go")
    assert big.endswith("big: 15,000,000 of 730,000,000 samples (2.1%), 100,000 samples/s, about 2.0 h to go")
    trained["runs/a"] = 1_841_000
    assert reporter.lines(now=1940.0)[0].endswith("(96.8%), 1,000 samples/s, about 1 min to go")
    # a run that stood still (queued, loading its data) is timed from when it moves, not from its first look
    trained["runs/q"] = 10_000
    reporter.lines(now=2000.0)
    reporter.lines(now=5000.0)
    trained["runs/q"] = 20_000
    assert reporter.lines(now=5010.0)[2].endswith("(2.0%), 1,000 samples/s, about 16 min to go")
    for name in ("aevb_nz20", "big", "queued"):
        reporter.in_flight.pop(name)
    assert reporter.lines(now=6000.0) == []


def test_the_status_thread_redraws_while_runs_train_and_survives_a_failed_redraw():
    """A run of 10^8 samples takes hours: the figure and table follow it between its ends, and a
    redraw that fails (say, a history file caught mid-write elsewhere) is reported, not fatal."""
    import threading
    calls, logged, twice = [], [], threading.Event()

    def redraw():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise OSError("history.csv\nvanished")
        if len(calls) >= 3:
            twice.set()
    with sweep._StatusReporter(0.01, logged.append, redraw, redraw_every=0.0):
        assert twice.wait(10)
    assert any("could not redraw the figure and table (OSError: history.csv vanished)" in line for line in logged)
    # by default no more often than once a minute, however often the lines come
    assert sweep._StatusReporter(0.5, print, redraw).redraw_every == 60.0
    assert sweep._StatusReporter(600, print, redraw).redraw_every == 600


def test_run_sweep_gives_the_status_thread_its_redraw_behind_one_lock(tmp_path, monkeypatch):
    """The status thread's redraw and the sweep's own never draw at once (pyplot, the same files)."""
    import threading
    handed, drawn, waiting = [], [], []

    class Spy(sweep._StatusReporter):
        def __init__(self, every, log, redraw=None, redraw_every=None):
            super().__init__(every, log, redraw, redraw_every)
            handed.append(redraw)

    def redraw():
        drawn.append(1)
        if len(drawn) == 1:                 # the sweep's final redraw: the thread's must wait for it
            other = threading.Thread(target=handed[0])
            other.start()
            other.join(0.3)
            waiting.append(other)
            assert other.is_alive() and len(drawn) == 1
    monkeypatch.setattr(sweep, "_StatusReporter", Spy)
    sweep.run_sweep([], str(tmp_path), redraw, status_every=0, log=lambda *_: None)
    waiting[0].join(10)
    assert len(drawn) == 2 and not waiting[0].is_alive()


def test_status_says_where_the_sweep_stands_and_trains_nothing(tmp_path):
    """--status: the plan, with the samples each resumable run has trained, and the table; no run starts."""
    base = base_config(tmp_path, dataset="frey", samples=50_000)
    half = dataclasses.replace(base, nz=5, out=str(tmp_path / "aevb_nz5"))
    train(half, data=toy_data(), callback=lambda learner, st: st.steps == 7, log=lambda *_: None)
    before = (tmp_path / "aevb_nz5" / "checkpoint.npz").read_bytes()
    stdout, _ = run_sweep_script("figure2.py", tmp_path, "--dataset=frey", "--status", "--nz=5", "--samples=5e4",
                                 "--hidden=8", "--batch_size=20", "--warmup=2")
    assert "aevb_nz5: resume (at 140 samples)" in stdout and "wakesleep_nz5: new" in stdout
    assert "| frey | 5 | aevb |" in stdout and "| 140 | interrupted |" in stdout
    assert (tmp_path / "aevb_nz5" / "checkpoint.npz").read_bytes() == before
    assert not (tmp_path / "wakesleep_nz5").exists()
    stdout, _ = run_sweep_script("figure2.py", tmp_path / "none", "--dataset=frey", "--status")
    assert f"no runs in {tmp_path / 'none'} yet" in stdout and not (tmp_path / "none").exists()


@pytest.mark.parametrize("argv,message", [
    (["--status=1"], "--status takes no value"),
    (["--smoke=yes"], "--smoke takes no value"),
    (["--status_every=-1"], "--status_every must be a number of seconds >= 0"),
    (["--status_every=nan"], "--status_every must be a number of seconds >= 0"),
    (["--status_every=inf"], "--status_every must be a number of seconds >= 0"),
    (["--status_every=soon"], "cannot read --jobs, --threads or --status_every"),
    (["--jobs=0"], "--jobs and --threads must be positive"),
])
def test_the_sweep_options_refuse_bad_values_in_one_line(argv, message):
    from npvae.config import ConfigError
    with pytest.raises(ConfigError) as e:
        sweep.parse_command(argv, ())
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_run_that_appeared_after_planning_is_never_overwritten(tmp_path):
    """Planned "new", but a checkpoint is there when the run starts (another sweep, or two runs
    sharing a folder): the run fails with the reason and the checkpoint is untouched."""
    base = base_config(tmp_path, out=str(tmp_path / "aevb_nz2"))
    spec, = sweep.plan_runs({"aevb_nz2": base})
    assert spec.action == "new"
    train(base, data=toy_data(), callback=lambda learner, st: st.steps == 3, log=lambda *_: None)
    before = (tmp_path / "aevb_nz2" / "checkpoint.npz").read_bytes()
    result = sweep.run_spec(spec)
    assert result["status"] == "failed" and "a run appeared in" in result["reason"]
    assert (tmp_path / "aevb_nz2" / "checkpoint.npz").read_bytes() == before


def test_the_y_range_shows_every_curve_but_lets_a_far_outlier_run_off():
    """fit_y: the curves right of `left` and the paper's values are inside the y range, except a
    point far below the rest (a fresh model's first evaluation), which would squash the panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from npvae import plots
    curves = {"aevb": [[1e5, 1, -200, -198], [1e6, 2, -150, -149], [1e7, 3, -131, -135]],
              "mcem": [[1e5, 1, -543, -543], [1e6, 2, -210, -205], [1e7, 3, -199, -194]]}
    marks = {"aevb": (-131, -138), "mcem": (-147, -148.5)}
    fig, ax = plt.subplots()
    plots.fit_y(ax, curves, marks, 1e5)
    lo, hi = ax.get_ylim()
    assert lo < -210 and hi > -131 and lo > -543               # everything but the first MCEM point
    curves["mcem"][0][2:] = [-220, -219]                        # no outlier: all of it shows
    plots.fit_y(ax, curves, marks, 1e5)
    assert ax.get_ylim()[0] < -220
    plt.close(fig)


def test_two_sweeps_into_one_folder_keep_each_others_failures(tmp_path):
    """Figure 3's MCEM sweep and its minibatch sweep may share runs/fig3: each clears and records
    only its own runs' entries of failures.json."""
    sweep._update_failures(str(tmp_path), {"mcem_n1000": "diverged", "aevb_n1000": "a worker died"})
    sweep._update_failures(str(tmp_path), {"aevb_n1000": None, "wakesleep_n1000": None})   # the other sweep starts
    sweep._update_failures(str(tmp_path), {"wakesleep_n1000": "diverged"})
    assert json.load(open(tmp_path / "failures.json")) == {"mcem_n1000": "diverged", "wakesleep_n1000": "diverged"}


def _record_failures(out, who, n):
    for i in range(n):
        sweep._update_failures(out, {f"{who}_{i}": "diverged"})


def test_sweeps_updating_failures_at_the_same_moment_lose_no_entry(tmp_path):
    """Two sweeps into one folder (say --nz=10 and --nz=200) may update failures.json at once: each
    read-modify-write holds a lock, so no update is lost to the other's."""
    import multiprocessing
    pytest.importorskip("fcntl")                      # without it (Windows) the update runs unlocked
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_failures, args=(str(tmp_path), f"sweep{j}", 40)) for j in range(4)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert len(json.load(open(tmp_path / "failures.json"))) == 4 * 40


def test_a_folder_that_cannot_be_locked_warns_and_still_records_failures(tmp_path, monkeypatch):
    """A file system without flock (some NFS mounts a Dask cluster shares) is no reason to stop a
    sweep: the update goes on unlocked, with a warning."""
    fcntl = pytest.importorskip("fcntl")

    def no_locks(fd, op):
        raise OSError(37, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock"):
        sweep._update_failures(str(tmp_path), {"aevb_nz3": "diverged"})
    assert json.load(open(tmp_path / "failures.json")) == {"aevb_nz3": "diverged"}


@pytest.mark.parametrize("script,argv", [("figure2.py", ["--dataset=frey", "--nz=2"]),
                                         ("figure3.py", ["--algorithms=aevb", "--n_train=1000"]),
                                         ("protocols.py", ["--protocols=static"])])
def test_a_local_sweep_without_its_data_refuses_in_one_line_and_starts_no_run(script, argv, tmp_path):
    """Without the data every run would fail alike, each leaving a folder behind: the sweep says
    what is missing and where it looked, before any run starts."""
    import subprocess
    import sys
    empty = tmp_path / "no_data"
    empty.mkdir()
    env = dict(os.environ, NPVAE_DATA_DIR=str(empty), NPVAE_CACHE_DIR=str(empty), MPLBACKEND="Agg")
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "..", "examples", script),
           f"--out={tmp_path / 'sweep'}", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and " not found: looked for " in line and str(empty) in line
    assert not (tmp_path / "sweep").exists() or not any(p.is_dir() for p in (tmp_path / "sweep").iterdir())


def test_a_failure_with_a_long_message_stays_on_its_row_of_the_table(tmp_path):
    rows = [{"name": "a", "status": "failed: Error: line one\n  - line | two\n"}]
    text = sweep.write_table(rows, str(tmp_path), columns=(("name", "run", ""), ("status", "status", "")))
    assert text.splitlines()[2] == "| a | failed: Error: line one - line \\| two |"
