"""The KL weight beta and KL warm-up: what weighting the bound's KL term does to the model.

    python examples/kl_weight.py                       # the paper's MNIST model, 1e6 training samples per run
    python examples/kl_weight.py --samples 3e5         # a shorter budget
    python examples/kl_weight.py --betas 0.25,1,8      # other weights (and --warmup-samples 0: no warm-up run)
    python examples/kl_weight.py --smoke               # a 64-32-4 model on synthetic binary data, seconds (CI)

Training maximizes E_q[log p(x|z)] - beta KL(q(z|x) || p(z)) (the harness's --beta): beta = 1 is
the bound, the paper's objective; beta > 1 pulls q(z|x) towards the prior (the beta-VAE of
Higgins et al., 2017); beta < 1 lets it move away.  A KL warm-up (--kl_warmup; Bowman et al.,
2016; Sønderby et al., 2016) raises beta linearly from 0 to 1 over the first training samples, so
that the decoder learns to use z before the KL term pulls q onto the prior.  Every run is the
paper's MNIST model (784-500-20, Bernoulli decoder, dynamic binarization, Adagrad 0.01, M = 100,
L = 1) trained through the one harness, npvae.train.train, for the same budget from the same seed:
only the KL weight differs.

Each trained model is then measured on the test set (binarized once, as the harness evaluates it)
with one fixed noise draw, the same for every model:

    reconstruction   E_q[log p(x|z)], one sample of z per image (nats per image)
    KL               KL(q(z|x) || p(z)), analytic (nats per image)
    bound            reconstruction - KL: the true bound (beta = 1), whatever beta trained the model
    active units     latent dimensions j with Cov_x(E_q[z_j]) = Var_x(mu_j(x)) > 0.01 (Burda et al., 2015)

NPVAE_DATA_DIR must point at the data (e.g. ../shared/data).  --smoke trains a 64-32-4 model on
synthetic binary data (no data files), for a few thousand samples per run.

Outputs in --out: runs/<name>/ (each a harness run folder: config, history, checkpoint),
kl_weight.md and kl_weight.csv (the table), active_units.csv (Var_x(mu_j) for every model and
dimension), kl_weight_samples.png (decoder means for the same z ~ N(0, I) in every model),
kl_weight_tradeoff.png (reconstruction against KL, and the sorted Var_x(mu_j)), kl_weight_curves.png
(the test bound during training).  An --out that holds results is refused unless --overwrite.
"""
import argparse
import csv
import os
import sys
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import ACTIVE_THRESHOLD, UsageError, active_units, add_run_options, claim_out, load_run  # noqa: E402
from _study import markdown_table, pyplot, require, run, save_figure, study_parser, synthetic_binary  # noqa: E402
from _study import tile, train_runs, training_samples, write_csv, write_text  # noqa: E402

from npvae.model import elbo_forward  # noqa: E402

OUTPUTS = ("runs", "kl_weight.md", "kl_weight.csv", "active_units.csv", "kl_weight_samples.png",
           "kl_weight_tradeoff.png", "kl_weight_curves.png")


def run_configs(out, samples, betas, warmup_samples, seed, dtype, smoke):
    """{name: TrainConfig}: one run per beta, and one with a warm-up of beta from 0 to 1."""
    from npvae.config import TrainConfig

    if smoke:
        base = TrainConfig(dataset="mnist", binarize="static", nz=4, hidden=(32,), batch_size=20, warmup=2,
                           lr=0.05, eval_max=200, eval_per_decade=2)
    else:
        base = TrainConfig(dataset="mnist", binarize="dynamic", nz=20, hidden=(500,), eval_max=10_000,
                           eval_per_decade=4)
    base = replace(base, samples=samples, seed=seed, dtype=dtype, progress=False, figures=False,
                   checkpoint_seconds=60.0)
    configs = {}
    for beta in betas:
        name = f"beta_{beta:g}"
        configs[name] = replace(base, beta=float(beta), out=os.path.join(out, "runs", name))
    if warmup_samples:
        name = f"warmup_{warmup_samples}"
        configs[name] = replace(base, kl_warmup=int(warmup_samples), out=os.path.join(out, "runs", name))
    for config in configs.values():
        config.validate()
    return configs


def study_data(configs, smoke, seed):
    """The TrainingData every run trains on (loaded once): MNIST, or synthetic binary data in smoke mode."""
    from npvae.data import DataNotFoundError, TrainingData
    from npvae.runs import load_run_data

    c = next(iter(configs.values()))
    if smoke:
        rng = np.random.default_rng(seed + 1000)
        x = synthetic_binary(rng, 800, 64)                    # one set of prototypes: train and test alike
        train_x, test_x = x[:600], x[600:]
        dtype = np.dtype(c.dtype)
        return TrainingData(train_x.astype(dtype), train_x.astype(dtype), test_x.astype(dtype), None, (8, 8), False)
    try:
        return load_run_data(c)                               # as the harness loads a run's data
    except (DataNotFoundError, FileNotFoundError) as e:
        raise UsageError(f"data not found ({e}); set NPVAE_DATA_DIR (e.g. ../shared/data) or use --smoke") from None


def measure(vae, x, eps, batch_size=2000):
    """The bound's terms on x (n, D) with fixed noise eps (1, n, Z), averaged per datapoint:
    {reconstruction, kl, bound, active, var_mu}."""
    rec = kl = 0.0
    mus = []
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        _, cache = elbo_forward(vae.params, vae.arch, x[sl], eps[:, sl], "B")
        rec += float(cache.reconstruction.sum())
        kl += float(cache.kl.sum())
        mus.append(vae.encode(x[sl])[0])
    n = len(x)
    count, var = active_units(np.concatenate(mus))
    return {"reconstruction": rec / n, "kl": kl / n, "bound": (rec - kl) / n, "active": count, "var_mu": var}


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [(int(float(r["samples"])), float(r["test_elbo"])) for r in csv.DictReader(f)]


# --------------------------------------------------------------------------- figures

def plot_samples(models, z, image_shape, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(2.6 * len(models), 2.9), squeeze=False)
    n_cols = int(np.ceil(np.sqrt(len(z))))
    for ax, (label, vae) in zip(axes[0], models.items()):
        means = vae.decode(z.astype(vae.dtype))
        ax.imshow(tile(means.reshape((-1,) + tuple(image_shape)), n_cols), cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle("decoder means for the same z ~ N(0, I) in every model", fontsize=10)
    save_figure(fig, path)


def plot_tradeoff(results, path, nz):
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (label, r) in enumerate(results.items()):
        ax.plot(r["kl"], r["reconstruction"], "o", color=f"C{i}", ms=7, label=f"{label}: bound {r['bound']:.2f}")
        ax2.semilogy(np.arange(1, nz + 1), np.sort(r["var_mu"])[::-1], "o-", ms=3, color=f"C{i}",
                     label=f"{label}: {r['active']} active")
    ax.set_xlabel("KL(q(z|x) || p(z)), nats per image (rate)")
    ax.set_ylabel("E_q[log p(x|z)], nats per image")
    ax.set_title("reconstruction against KL (test set)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    ax.legend(fontsize=7)
    ax2.axhline(ACTIVE_THRESHOLD, color="k", ls=":", lw=1, label=f"threshold {ACTIVE_THRESHOLD}")
    ax2.set_xlabel("latent dimension, sorted")
    ax2.set_ylabel("Var_x(E_q[z_j])")
    ax2.set_title("active units (Burda et al.): Var_x(E_q[z_j]) > 0.01", fontsize=9)
    ax2.grid(True, which="major", alpha=0.3)
    ax2.legend(fontsize=7)
    save_figure(fig, path)


def plot_curves(histories, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (label, h) in enumerate(histories.items()):
        s, b = np.array(h, dtype=float).T
        ax.semilogx(s, b, "o-", ms=3, color=f"C{i}", label=label)
    ax.set_xlabel("training samples")
    ax.set_ylabel("test bound (beta = 1), nats per image")
    ax.set_title("the true bound during training, whatever beta trains", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    values = np.concatenate([np.array(h, dtype=float)[:, 1] for h in histories.values()])
    lo, hi = np.percentile(values, 10), values.max()
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-9)
    save_figure(fig, path)


# --------------------------------------------------------------------------- what it means

def conclusion(results, labels, betas, warmup_name):
    """Two sentences computed from the numbers."""
    fixed = [(b, results[f"beta_{b:g}"]) for b in sorted(betas)]
    parts = []
    if len(fixed) >= 2:
        (b0, r0), (b1, r1) = fixed[0], fixed[-1]
        best_beta, best = max(fixed, key=lambda br: br[1]["bound"])
        kls = [r["kl"] for _, r in fixed]
        recs = [r["reconstruction"] for _, r in fixed]
        trade = ("a monotone trade: every step up in beta lowered both the KL and the reconstruction term"
                 if np.all(np.diff(kls) < 0) and np.all(np.diff(recs) < 0) else
                 "not a monotone trade at this budget (see the table)")
        parts.append(f"Raising beta from {b0:g} to {b1:g} moved the KL from {r0['kl']:.1f} to {r1['kl']:.1f} nats, "
                     f"the reconstruction term from {r0['reconstruction']:.1f} to {r1['reconstruction']:.1f} and the "
                     f"active units from {r0['active']} to {r1['active']}: {trade}. The true bound (beta = 1) is "
                     f"highest for the model trained with beta = {best_beta:g} ({best['bound']:.2f} nats); the value "
                     f"of a beta-weighted objective is not a bound to report.")
    if warmup_name and 1.0 in betas:
        w, one = results[warmup_name], results["beta_1"]
        parts.append(f"The warm-up run ({labels[warmup_name]}) ended with bound {w['bound']:.2f} and "
                     f"{w['active']} active units, against {one['bound']:.2f} and {one['active']} for beta = 1 "
                     f"from the start ({w['bound'] - one['bound']:+.2f} nats).")
    return " ".join(parts) or "One model only: give several --betas (or a warm-up) to see the trade-off."


# --------------------------------------------------------------------------- the command line

def float_list(text):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(np.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers >= 0, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a beta is listed twice in {text!r}")
    return values


def sample_count(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of training samples, got {text!r}") from None
    if not (np.isfinite(value) and value >= 0 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole number of training samples >= 0, got {text!r}")
    return int(value)


def build_parser():
    p = study_parser("kl_weight", __doc__)
    p.add_argument("--samples", type=sample_count, default=None,
                   help="training samples per run (default 1e6; --smoke 6000)")
    p.add_argument("--betas", type=float_list, default=(0.5, 1.0, 2.0, 4.0), help="KL weights (default 0.5,1,2,4)")
    p.add_argument("--warmup-samples", type=sample_count, default=None,
                   help="the warm-up run raises beta from 0 to 1 over this many samples (default: half the "
                        "budget; 0: no warm-up run)")
    return add_run_options(p)                    # --dtype, --overwrite: last, as --help lists them


def _main(argv):
    args = build_parser().parse_args(argv)
    samples = training_samples(args)
    warmup = args.warmup_samples if args.warmup_samples is not None else samples // 2
    require(warmup <= samples, f"--warmup-samples ({warmup}) must not exceed --samples ({samples})")
    configs = run_configs(args.out, samples, args.betas, warmup, args.seed, args.dtype, args.smoke)
    data = study_data(configs, args.smoke, args.seed)        # before anything is written
    out = claim_out(args.out, OUTPUTS, args.overwrite)
    summaries = train_runs(configs, data, overwrite=args.overwrite)

    warmup_name = next((n for n in configs if n.startswith("warmup_")), None)
    labels = {n: f"beta = {c.beta:g}" for n, c in configs.items()}
    if warmup_name:
        labels[warmup_name] = f"warm-up 0 -> 1 over {warmup:,}"
    rng = np.random.default_rng(args.seed)
    x = data.test_x.astype(np.float64)
    nz = configs[next(iter(configs))].nz
    eps = rng.standard_normal((1, len(x), nz))
    z = rng.standard_normal((64, nz))
    models, results = {}, {}
    for name, config in configs.items():
        vae, _ = load_run(config.out)
        models[labels[name]], results[name] = vae, measure(vae, x, eps)

    header = ["run", "beta during training", "reconstruction E_q[log p(x|z)]", "KL(q||p)", "bound (beta = 1)",
              f"active units (of {nz})", "training seconds"]
    rows = []
    for name, config in configs.items():
        r = results[name]
        during = (f"0 -> {config.beta:g} over {config.kl_warmup:,} samples, then {config.beta:g}" if config.kl_warmup
                  else f"{config.beta:g}")
        rows.append([name, during, f"{r['reconstruction']:.2f}", f"{r['kl']:.2f}", f"{r['bound']:.2f}", r["active"],
                     f"{summaries[name]['seconds']:.0f}"])
    c0 = next(iter(configs.values()))
    what = ("synthetic binary data, a 64-32-4 model (--smoke)" if args.smoke else
            f"MNIST, dynamic binarization, {c0.nz} latent dimensions, {c0.hidden[0]} tanh hidden units")
    notes = (f"Test set ({len(x):,} images), one fixed noise draw shared by every model; nats per image. "
             f"{what}; {samples:,} training samples per run, seed {args.seed}, {args.dtype}, trained with "
             f"npvae.train.train ({summaries[next(iter(configs))]['implementation']}). Active: Var_x(E_q[z_j]) > "
             f"{ACTIVE_THRESHOLD}.\n")
    table = markdown_table(header, rows)
    write_text(os.path.join(out, "kl_weight.md"), "# The KL weight\n\n" + table + "\n" + notes)
    write_csv(os.path.join(out, "kl_weight.csv"),
              ["run", "beta", "kl_warmup", "samples", "reconstruction", "kl", "bound", "active_units", "nz",
               "train_seconds"],
              [[n, c.beta, c.kl_warmup, c.samples, f"{results[n]['reconstruction']:.6f}", f"{results[n]['kl']:.6f}",
                f"{results[n]['bound']:.6f}", results[n]["active"], nz, f"{summaries[n]['seconds']:.3f}"]
               for n, c in configs.items()])
    write_csv(os.path.join(out, "active_units.csv"), ["run", "dimension", "var_x_mu"],
              [[n, j, f"{v:.6e}"] for n in configs for j, v in enumerate(results[n]["var_mu"])])
    plot_samples(models, z, data.image_shape, os.path.join(out, "kl_weight_samples.png"))
    plot_tradeoff({labels[n]: r for n, r in results.items()}, os.path.join(out, "kl_weight_tradeoff.png"), nz)
    plot_curves({labels[n]: read_history(c.out) for n, c in configs.items()}, os.path.join(out, "kl_weight_curves.png"))
    print(table + "\n" + notes)
    print(f"outputs in {out}/\n")
    print(conclusion(results, labels, args.betas, warmup_name))
    return 0


def main(argv=None):
    return run(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
