"""The bound point by point: when a run's test bound falls, is every image getting worse, or a few?

A run's history.csv reports the *mean* of the per-datapoint bound.  This study takes a trained run
(its folder) or the snapshots a run kept while it trained (``--snapshots=true`` writes
``snapshots/checkpoint_<samples>.npz`` at every evaluation) and looks at the whole distribution:
on the points and fixed noise the harness evaluated (``npvae.runs.evaluation_sets``), the mean,
median and 5th / 95th percentiles of the per-datapoint bound, the mean's standard error over the
points (how much another test set of that size could move it), its two terms (reconstruction and
KL), and for a Gaussian decoder the decoder's mean log-variance at the encoder's mean (a shrinking
variance makes every image that the decoder does not expect cost more).

    python examples/bound_spread.py runs/fig2_frey/aevb_nz5/snapshots/*.npz --out=runs/studies/bound_spread

For a run given with two or more checkpoints it also says how each test point moved from the
first to the last: the share that rose, the median change, and how much of the mean's change the
5% that fell most account for.

Writes bound_spread.md and .csv (a row per checkpoint and set) and bound_spread.png (per run: the
mean, median and 5th percentile against training samples; the test set's per-point bounds at the
first and last checkpoint as histograms).  Where a checkpoint's own history has a row at its
budget, the table's mean is checked against it (the number the run reported).  ``--smoke``
trains a small run with snapshots on synthetic data and studies it (seconds).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py
from _study import (UsageError, fmt, make_out, markdown_table, pyplot, require, run, save_figure,  # noqa: E402
                    study_parser, synthetic_binary, write_csv, write_text)

from npvae import paper  # noqa: E402
from npvae.model import decoder_forward, elbo_forward, encoder_forward  # noqa: E402
from npvae.runs import (RunLoadError, evaluation_key, evaluation_sets, load_run, load_run_data,  # noqa: E402
                        reported_bound, run_folder)

PERCENTILES = (5, 50, 95)
HEADER = ["run", "samples", "set", "mean", "stderr", "history", "median", "p5", "p95", "reconstruction", "KL",
          "decoder logvar"]


def point_terms(vae, x, eps, estimator="B", chunk=1000):
    """Per-datapoint bound and its two terms on x with fixed noise eps (1, n, Nz), as the harness's
    evaluation computes them (``npvae.model.elbo_forward`` with the run's estimator): {"elbo", "reconstruction",
    "kl"}, each (n,) float64; for a Gaussian decoder also "decoder_logvar", each point's mean
    log-variance over pixels at z = the encoder's mean."""
    parts = {"elbo": [], "reconstruction": [], "kl": [], "decoder_logvar": []}
    for start in range(0, x.shape[0], chunk):
        sl = slice(start, start + chunk)
        elbo, cache = elbo_forward(vae.params, vae.arch, x[sl], eps[:, sl], estimator)
        parts["elbo"].append(elbo)
        parts["reconstruction"].append(cache.reconstruction)
        parts["kl"].append(cache.kl)
        if vae.arch.likelihood == "gaussian":
            (mu, _), _ = encoder_forward(vae.params, vae.arch, x[sl])
            (_, logvar), _ = decoder_forward(vae.params, vae.arch, mu)
            parts["decoder_logvar"].append(logvar.mean(axis=-1))
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items() if v}


def summarize(terms):
    """The table's numbers for one set: mean, percentiles, the terms' means (mean as float64 sums)."""
    p5, p50, p95 = np.percentile(terms["elbo"], PERCENTILES)
    elbo = terms["elbo"]
    return {"mean": float(elbo.mean()), "stderr": float(elbo.std(ddof=1) / np.sqrt(elbo.size)) if elbo.size > 1
            else np.nan, "median": float(p50), "p5": float(p5), "p95": float(p95),
            "reconstruction": float(terms["reconstruction"].mean()), "kl": float(terms["kl"].mean()),
            "decoder_logvar": float(terms["decoder_logvar"].mean()) if "decoder_logvar" in terms else np.nan}


def study(paths, data=None):
    """{path: {"run", "samples", "likelihood", "sets": {"train": (summary, terms), "test": ...},
    "history": {"train": float or None, ...}}} for each run folder or snapshot file, in samples order
    per run.  data: a ``TrainingData`` to use for every path (smoke, tests); by default each run's
    own, loaded once per distinct data configuration."""
    loaded, results = {}, {}
    for path in paths:
        try:
            trained = load_run(path)
        except RunLoadError as e:
            raise UsageError(" ".join(str(e).split())) from None
        config = trained.config
        if config.algorithm == "mcem":
            raise UsageError(f"{path}: a Monte Carlo EM run trains no encoder, so it has no bound to spread")
        key = evaluation_key(config)
        if key not in loaded:
            loaded[key] = evaluation_sets(config, data if data is not None else _run_data(config))
        sets = {}
        for which, (x, eps) in loaded[key].items():
            terms = point_terms(trained.vae, x, eps, config.estimator)
            sets[which] = (summarize(terms), terms)
        reported = {w: reported_bound(path, trained.samples, w) for w in sets}
        results[path] = {"run": run_folder(path), "samples": trained.samples, "likelihood": config.likelihood(),
                         "sets": sets, "history": reported,
                         "paper": fig2_value(config)}
    return dict(sorted(results.items(), key=lambda kv: (kv[1]["run"], kv[1]["samples"])))


def fig2_value(config):
    """The paper's Fig. 2 end values (train, test) for a run of its model (its hidden size), else None."""
    if tuple(config.hidden) != (paper.HIDDEN.get(config.dataset),):
        return None
    return paper.fig2_value(config.algorithm, config.dataset, config.nz)


def _run_data(config):
    from npvae.data import ChecksumError, DataNotFoundError
    from npvae.train import no_data_message
    try:
        return load_run_data(config)
    except DataNotFoundError:
        raise UsageError(no_data_message(config)) from None
    except ChecksumError as e:
        raise UsageError(" ".join(str(e).split())) from None


def table_rows(results):
    rows = []
    for r in results.values():
        for which, (s, _) in r["sets"].items():
            h = r["history"][which]
            rows.append([r["run"], f"{r['samples']:,}", which, f"{s['mean']:.2f}", fmt(s["stderr"], ".2f"),
                         "" if h is None else f"{h:.2f}",
                         f"{s['median']:.2f}", f"{s['p5']:.2f}", f"{s['p95']:.2f}", f"{s['reconstruction']:.2f}",
                         f"{s['kl']:.2f}", fmt(s["decoder_logvar"], ".3f")])
    return rows


def disagreements(results):
    """The self-check: (largest |mean - history| over the rows with a history value, or None when
    none has one; the rows whose gap exceeds 1e-4 + 1e-6 |history| nats, the rounding of two sums
    of the same float values in different orders)."""
    gaps = [(abs(s["mean"] - r["history"][w]), r, w) for r in results.values() for w, (s, _) in r["sets"].items()
            if r["history"][w] is not None]
    bad = [f"{r['run']} at {r['samples']:,}, {w}" for gap, r, w in gaps
           if not gap <= 1e-4 + 1e-6 * abs(r["history"][w])]           # "not <=": a NaN gap is bad too
    return (max(g for g, _, _ in gaps) if gaps else None), bad


def non_finite(results):
    """(run, samples, set, count) of every set with a non-finite per-point bound."""
    return [(r["run"], r["samples"], w, int((~np.isfinite(t["elbo"])).sum())) for r in results.values()
            for w, (_, t) in r["sets"].items() if not np.isfinite(t["elbo"]).all()]


def point_changes(results, which="test", tail=0.05):
    """Per run with two or more checkpoints: how each point's bound moved from the first to the last.

    {run: {"first", "last" (samples), "mean_change", "rose" (share of points whose bound rose),
    "median_change", "tail_share" (the part of mean_change that the tail -- the fraction of points
    that fell most -- contributes: their changes summed over all n points), "n_tail"}}."""
    changes = {}
    for run_name in sorted({r["run"] for r in results.values()}):
        mine = [r for r in results.values() if r["run"] == run_name]
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        d = last["sets"][which][1]["elbo"] - first["sets"][which][1]["elbo"]
        n_tail = max(1, int(round(tail * d.size)))
        changes[run_name] = {"first": first["samples"], "last": last["samples"], "mean_change": float(d.mean()),
                             "rose": float((d > 0).mean()), "median_change": float(np.median(d)),
                             "tail_share": float(np.sort(d)[:n_tail].sum() / d.size), "n_tail": n_tail}
    return changes


def change_lines(changes, which="test"):
    return [f"{run}, {which} set, from {c['first']:,} to {c['last']:,} samples: the mean moved {c['mean_change']:+.2f} "
            f"nats; {c['rose']:.0%} of the points rose (median change {c['median_change']:+.2f}); the {c['n_tail']} "
            f"points that fell most contribute {c['tail_share']:+.2f} of the mean's change, the rest "
            f"{c['mean_change'] - c['tail_share']:+.2f}." for run, c in changes.items()]


def plot(results, path):
    plt = pyplot()
    runs = sorted({r["run"] for r in results.values()})
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.8 * len(runs)), squeeze=False)
    for (ax, hx), run_name in zip(axes, runs):
        mine = [r for r in results.values() if r["run"] == run_name]
        samples = [r["samples"] for r in mine]
        for which, color in (("train", "C0"), ("test", "C3")):
            for stat, style, label in (("mean", "-", "mean (the reported bound)"), ("median", "--", "median"),
                                       ("p5", ":", "5th percentile")):
                ax.plot(samples, [r["sets"][which][0][stat] for r in mine], style, color=color, marker=".",
                        label=f"{which}, {label}")
        if mine[-1]["paper"] is not None:
            for value, color, which in zip(mine[-1]["paper"], ("C0", "C3"), ("train", "test")):
                ax.plot([1e8], [value], marker="*", markersize=11, color=color, linestyle="none",
                        label=f"paper's {which}, end of Fig. 2")
        ax.set_xscale("log")
        ax.set_xlabel("training samples")
        ax.set_ylabel("bound per datapoint (nats)")
        ax.set_title(run_name, fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        first, last = mine[0], mine[-1]
        both = np.concatenate([first["sets"]["test"][1]["elbo"], last["sets"]["test"][1]["elbo"]])
        bins = np.linspace(np.percentile(both, 1), both.max(), 40)
        for r, color in ((first, "C1"), (last, "C3")):
            hx.hist(np.clip(r["sets"]["test"][1]["elbo"], bins[0], None), bins=bins, color=color, alpha=0.5,
                    label=f"{r['samples']:,} samples")
        hx.set_xlabel("test bound of one image (nats; the lowest 1% piled at the left edge)")
        hx.set_ylabel("images")
        hx.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def smoke_paths(out, seed):
    """A small run with snapshots on synthetic 0/1 data (no data files): its snapshots and its data."""
    from npvae.train import TrainConfig, TrainingData, train
    rng = np.random.default_rng(seed)
    x = synthetic_binary(rng, 500, 64)
    data = TrainingData(x[:400], x[:400], x[400:], None, (8, 8), False)
    config = TrainConfig(nz=2, hidden=(16,), samples=40_000, batch_size=20, eval_per_decade=4, snapshots=True,
                         lr=0.05, binarize="static", progress=False, figures=False, seed=seed,
                         out=os.path.join(out, "smoke_run"), checkpoint_seconds=1e9)
    train(config, data=data, overwrite=True, log=lambda *_: None)
    folder = os.path.join(config.out, "snapshots")
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))], data


def build_parser():
    p = study_parser("bound_spread", __doc__)
    p.add_argument("paths", nargs="*", help="run folders and/or snapshot files (checkpoint_<samples>.npz)")
    return p


def _main(argv):
    args = build_parser().parse_args(argv)
    require(args.smoke or args.paths, "give run folders or snapshot files (or --smoke)")
    require(not (args.smoke and args.paths), "--smoke trains its own run: give no paths with it")
    for path in args.paths:
        require(os.path.exists(path), f"{path}: no such run folder or snapshot file")
    out = make_out(args.out)
    paths, data = smoke_paths(out, args.seed) if args.smoke else (args.paths, None)
    results = study(paths, data)
    broken = non_finite(results)
    if broken:                      # a percentile or a histogram of them would mean nothing
        print("error: non-finite per-point bounds: " + "; ".join(f"{run} at {s:,}, {w}: {n}" for run, s, w, n in broken),
              file=sys.stderr)
        return 1
    rows = table_rows(results)
    gap, bad = disagreements(results)
    check = ("no checkpoint had an evaluation at its own budget, so the means are not checked against a history"
             if gap is None else f"the means agree with the runs' own evaluations to {gap:.1e} nats at most")
    table = markdown_table(HEADER, rows)
    notes = (f"Per-datapoint bound on the points and fixed noise the harness evaluated; \"history\" is the bound the "
             f"run reported at that budget, where it has one: {check}. Stderr: the mean's standard error over the "
             f"set's points (sd / sqrt(n)), how far another sample of as many points could move it. Percentiles: "
             f"numpy's linear ones. Decoder "
             f"logvar: mean log sigma^2 of a Gaussian decoder at the encoder's mean (a dash for Bernoulli).\n")
    notes += "".join("\n" + line + "\n" for line in change_lines(point_changes(results)))
    write_text(os.path.join(out, "bound_spread.md"), table + "\n" + notes)
    write_csv(os.path.join(out, "bound_spread.csv"), HEADER, rows)
    plot(results, os.path.join(out, "bound_spread.png"))
    print(table + "\n" + notes)
    print(f"outputs in {out}/")
    if bad:
        print(f"error: a mean here differs from the run's own evaluation by up to {gap:.3g} nats ({'; '.join(bad)})",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    return run(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
