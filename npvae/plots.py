"""Figures of a run (matplotlib, non-interactive Agg backend): learning curves, samples,
reconstructions, the latent scatter and, for Nz = 2, the learned manifold of Fig. 4; and image
panels side by side, as the paper's Figs. 4 and 5 lay them out (examples/figure4_5.py)."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from .fileio import atomic_path  # noqa: E402


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def tile(images, n_cols):
    """(n, h, w) images -> one (rows*h, n_cols*w) canvas with 1-pixel gaps."""
    n, h, w = images.shape
    n_rows = int(np.ceil(n / n_cols))
    canvas = np.ones((n_rows * (h + 1) - 1, n_cols * (w + 1) - 1))
    for i in range(n):
        r, c = divmod(i, n_cols)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[i]
    return canvas


def plot_learning_curves(history, path, title="", paper=None, label="AEVB",
                         ylabel="average lower bound per datapoint"):
    """Train and test bound (or another metric, named by ylabel) against training samples (log x), as in Fig. 2."""
    h = np.asarray(history, dtype=float).reshape(-1, 4)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(h[:, 0], h[:, 2], "-o", ms=3, label=f"{label} (train)")
    ax.semilogx(h[:, 0], h[:, 3], "-s", ms=3, label=f"{label} (test)")
    if paper is not None:
        ax.axhline(paper[0], color="C0", ls=":", lw=1, label=f"paper, train ({paper[0]})")
        ax.axhline(paper[1], color="C1", ls=":", lw=1, label=f"paper, test ({paper[1]})")
    if len(h):
        lo = np.percentile(h[:, 2:], 5)
        hi = max(h[:, 2:].max(), paper[0] if paper else -np.inf)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo) + 1e-9)
    ax.set_xlabel("# training samples evaluated")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


FIG2_LEFT = 1e5          # Fig. 2's x axis starts at 10^5 training samples
# Curves are keyed by algorithm (Figs. 2, 3) or by MNIST binarization (the protocol comparison);
# "paper" colours the paper's markers where every curve shares one paper value.
COLORS = {"aevb": "C3", "wakesleep": "C0", "mcem": "C2", "dynamic": "C3", "static": "C1", "none": "C4",
          "paper": "k"}
LABELS = {"aevb": "AEVB", "wakesleep": "wake-sleep", "mcem": "MCEM", "dynamic": "dynamic binarization",
          "static": "static (Larochelle)", "none": "grey levels"}


def draw_fig2_panel(ax, curves, paper_values=None, title="", paper_budget=1e8):
    """One panel laid out like Fig. 2: training samples on a log x axis, train solid, test dashed,
    one colour per algorithm, the paper's end values as markers at the right edge.

    curves: {algorithm: history rows (samples, seconds, train, test)}; paper_values:
    {algorithm: (train, test)} or None; paper_budget: where the paper's curves end (Fig. 2: 1e8,
    Fig. 3: about 6e7), the right edge unless a run went further."""
    ax.set_xscale("log")               # also for a panel with no curve yet
    right = paper_budget
    reached = max((np.asarray(h, float).reshape(-1, 4)[-1, 0] for h in curves.values() if len(h)), default=1e8)
    first = min((np.asarray(h, float).reshape(-1, 4)[0, 0] for h in curves.values() if len(h)), default=1e4)
    left = FIG2_LEFT if reached > 10 * FIG2_LEFT else min(1e4, first / 1.5)   # a smoke run starts earlier
    for alg, history in curves.items():
        h = np.asarray(history, dtype=float).reshape(-1, 4)
        if not len(h):
            continue
        c = COLORS.get(alg, "k")
        marker = "o" if len(h) == 1 else None                     # a line of one point would not show
        ax.semilogx(h[:, 0], h[:, 2], "-", color=c, lw=1.5, marker=marker, label=f"{LABELS.get(alg, alg)} train")
        ax.semilogx(h[:, 0], h[:, 3], "--", color=c, lw=1.5, marker=marker, mfc="none",
                    label=f"{LABELS.get(alg, alg)} test")
        right = max(right, h[-1, 0])
    if paper_values:
        ax.plot([], [], marker="<", color="gray", ls="none", label="paper, end of training (filled: train)")
    for alg, (tr, te) in (paper_values or {}).items():
        c = COLORS.get(alg, "k")
        ax.plot([right], [tr], marker="<", color=c, ms=7, ls="none")
        ax.plot([right], [te], marker="<", color=c, ms=7, ls="none", mfc="none")
    ax.set_xlim(left, right * 1.3)
    ax.set_xlabel("# training samples evaluated")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return left


def fit_y(ax, curves, paper_values, left):
    """A y range that shows the curves right of `left` and the paper's values.  Points far below the
    rest (under Tukey's outer fence, Q1 - 3 IQR: a freshly initialized model's first evaluation,
    such as full-batch MCEM's log p(x) = 784 log 1/2 before its first update) run off the bottom
    rather than squeeze every curve into a sliver of the panel."""
    ys = [np.asarray(h, float).reshape(-1, 4) for h in curves.values() if len(h)]
    ys = np.concatenate([h[h[:, 0] >= left][:, 2:].ravel() for h in ys] +
                        [np.ravel(list((paper_values or {}).values())), np.zeros(0)])
    ys = ys[np.isfinite(ys)]
    if ys.size >= 8:
        q1, q3 = np.percentile(ys, [25, 75])
        ys = ys[ys >= q1 - 3 * (q3 - q1)]
    if ys.size:
        lo, hi = ys.min(), ys.max()
        ax.set_ylim(lo - 0.05 * (hi - lo) - 1e-9, hi + 0.08 * (hi - lo) + 1e-9)


def plot_comparison(curves, path, paper_values=None, title=""):
    """AEVB against its baselines on one panel (see ``draw_fig2_panel``); the y range follows the
    curves past 1e5 samples and the paper's values (filled marker: train, open: test)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    left = draw_fig2_panel(ax, curves, paper_values, title)
    fit_y(ax, curves, paper_values, left)
    ax.set_ylabel("average lower bound per datapoint")
    ax.legend(fontsize=8, loc="best")
    _save(fig, path)


def draw_image_grid(ax, images, image_shape, n_cols, title=""):
    """Images (n, rows*cols) with values in [0, 1] tiled in grey (0 black, 1 white) into ax."""
    ax.imshow(tile(np.asarray(images).reshape((-1,) + tuple(image_shape)), n_cols), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def plot_image_grid(images, image_shape, path, title="", n_cols=10):
    fig, ax = plt.subplots(figsize=(n_cols * 0.6, np.ceil(len(images) / n_cols) * 0.6 * image_shape[0] / image_shape[1]))
    draw_image_grid(ax, images, image_shape, n_cols, title)
    _save(fig, path)


def plot_image_panels(panels, path, panel_height=6.0):
    """Image grids side by side at one height, one panel each (the layout of the paper's Figs. 4
    and 5).  panels: [(images (n, rows*cols), image_shape (rows, cols), n_cols, title)]."""
    def aspect(n, shape, n_cols):                 # width / height of tile()'s canvas
        n_rows = int(np.ceil(n / n_cols))
        return (n_cols * (shape[1] + 1) - 1) / (n_rows * (shape[0] + 1) - 1)
    widths = [aspect(len(images), shape, n_cols) for images, shape, n_cols, _ in panels]
    fig, axes = plt.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths, "wspace": 0.05},
                             figsize=(panel_height * sum(widths) + 0.2 * len(panels), panel_height + 0.6))
    for ax, (images, shape, n_cols, title) in zip(axes[0], panels):
        draw_image_grid(ax, images, shape, n_cols, title)
        ax.title.set_fontsize(10)
    _save(fig, path)


def plot_reconstructions(x, recon, image_shape, path, n=10):
    """Top row: test images; bottom row: decoder means at the posterior means."""
    both = np.concatenate([x[:n], recon[:n]]).reshape((-1,) + tuple(image_shape))
    plot_image_grid(both, image_shape, path, "test images (top) and reconstructions (bottom)", n_cols=n)


def plot_latent_scatter(mu, labels, path):
    """Posterior means of test points coloured by digit: both dimensions when Nz = 2, otherwise the
    two most active ones (largest variance of the means over the set).  Inactive units, whose
    posterior has collapsed onto the prior, have means near 0 and would show a structureless blob."""
    dims = [0, 1] if mu.shape[1] == 2 else sorted(np.argsort(mu.var(axis=0))[-2:][::-1])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(mu[:, dims[0]], mu[:, dims[1]], c=labels, cmap="tab10", s=3, alpha=0.7)
    if labels is not None:
        fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel(f"$\\mu_{{{dims[0] + 1}}}$")
    ax.set_ylabel(f"$\\mu_{{{dims[1] + 1}}}$")
    ax.set_title("test-set posterior means" +
                 (f" (the two most active of {mu.shape[1]} dims)" if mu.shape[1] > 2 else ""))
    _save(fig, path)


def manifold_grid(n=20):
    """A regular grid on the unit square mapped through the inverse Gaussian CDF (Fig. 4): (n*n, 2)."""
    u = (np.arange(n) + 0.5) / n
    z1, z2 = np.meshgrid(norm.ppf(u), norm.ppf(u)[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=1)


def decoder_mean(vae, z):
    """The decoder's mean at z (n, Nz) -> (n, D): sigmoid of the logits for a Bernoulli decoder,
    the mean head for a Gaussian one.  The paper's Figs. 4 and 5 draw means, not samples of x."""
    out = vae.decode(z)
    return out if vae.arch.likelihood == "bernoulli" else out[0]


def manifold_means(vae, n=20):
    """Fig. 4 for a model with Nz = 2: z = manifold_grid(n) and the decoder's mean at each point,
    (n*n, 2) and (n*n, D), in the order tile() draws them with n columns (z1 grows to the right,
    z2 upwards)."""
    if vae.arch.z_dim != 2:
        raise ValueError(f"the learned manifold is drawn for Nz = 2; this model has Nz = {vae.arch.z_dim}")
    z = manifold_grid(n).astype(vae.dtype)
    return z, decoder_mean(vae, z)


def make_figures(vae, data, history, out, rng, title="", paper=None, label="AEVB", labelled_scatter=True,
                 ylabel="average lower bound per datapoint", encoder=True):
    """All figures of a finished run, into the folder out.

    vae: the trained model; data: its TrainingData (test_x, test_y, image_shape); history: rows
    (samples, seconds, train, test); rng: a Generator for the prior samples; paper: the paper's
    (train, test) end values or None; label: the algorithm's name in the legend; ylabel: what the
    history's values are; encoder: False for a model trained without one (Monte Carlo EM): then
    no reconstructions or latent scatter."""
    shape = data.image_shape
    plot_learning_curves(history, os.path.join(out, "learning_curves.png"), title, paper, label, ylabel)
    z = rng.standard_normal((100, vae.arch.z_dim)).astype(vae.dtype)
    plot_image_grid(decoder_mean(vae, z), shape, os.path.join(out, "samples.png"),
                    "samples from the prior (decoder means)")
    if encoder:
        x = data.test_x[:10]
        mu, _ = vae.encode(x)
        plot_reconstructions(x, decoder_mean(vae, mu), shape, os.path.join(out, "reconstructions.png"))
    if encoder and labelled_scatter and data.test_y is not None and vae.arch.z_dim >= 2:
        mu_all, _ = vae.encode(data.test_x[:5000])
        plot_latent_scatter(mu_all, data.test_y[:5000], os.path.join(out, "latent_scatter.png"))
    if vae.arch.z_dim == 2:
        _, means = manifold_means(vae, 20)
        plot_image_grid(means, shape, os.path.join(out, "manifold.png"), "learned manifold (Fig. 4)", n_cols=20)
