"""Backprop through the stochastic node, by hand, for one datapoint and a 4-3-2 model.

    python examples/reparam_by_hand.py                 # prints the tables, writes runs/studies/reparam_by_hand/
    python examples/reparam_by_hand.py --seed 3 --init-std 1.0
    python examples/reparam_by_hand.py --smoke         # the same (the model is tiny)

Part 1 prints every local derivative at the node z = mu + sigma * eps, sigma = exp(logvar / 2)
(npvae/stochastic.py) and of the analytic KL (npvae/distributions.py) three ways: the formula,
what the library's backward function returns, and a finite difference (Ridders' method).

Part 2 follows single encoder weights through the node, term by term -- the reconstruction
path d log p(x|z)/dz * dz/dmu * dmu/dW and the KL path -dKL/dmu * dmu/dW -- and shows that
their sum is what npvae.model.elbo_backward returns and what a finite difference of
elbo_forward gives.  enc.h1.W[k, i] is where the paths through mu and through logvar meet (at
the hidden unit h_i): there they are summed once.

Estimator B (eq. 7), L = 1, one datapoint, everything float64 and deterministic given --seed.
Outputs in --out: local_derivatives.md/.csv, weight_paths.md/.csv, reparam_by_hand.png.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import fmt, make_out, markdown_table, pyplot, require, run, save_figure, study_parser  # noqa: E402
from _study import write_csv, write_text  # noqa: E402

from npvae import VAE  # noqa: E402
from npvae import distributions as D  # noqa: E402
from npvae.gradcheck import relative_error, ridders_derivative  # noqa: E402
from npvae.model import decoder_backward, decoder_forward, elbo_backward, elbo_forward, encoder_forward  # noqa: E402
from npvae.model import log_likelihood_backward, log_likelihood_forward, mlp_forward  # noqa: E402
from npvae.stochastic import logvar_to_sigma_backward, logvar_to_sigma_forward, reparameterize_backward  # noqa: E402
from npvae.stochastic import reparameterize_forward, sample_backward, sample_forward  # noqa: E402

TOL = 1e-6          # the project's gradient-check tolerance (tests/helpers.py)
H0 = 1e-2           # Ridders' first step; its tableau shrinks it until round-off wins


def fd(f, x, index):
    """d f() / d x[index] by Ridders' extrapolated central differences (x perturbed in place)."""
    unit = np.zeros_like(x)
    unit[index] = 1.0
    value, _ = ridders_derivative(f, x, unit, H0)
    return value


def make_setup(seed, init_std=0.5):
    """The 4-3-2 Bernoulli model, one binary datapoint x (1, 4) and one noise draw eps (1, 1, 2).

    init_std defaults to 0.5, not the paper's 0.01, so that mu, logvar and the weights are of
    order one and every term printed below is visibly non-zero.
    """
    rng = np.random.default_rng(seed)
    vae = VAE(4, 2, 3, "bernoulli", seed=rng, init_std=init_std)
    x = (rng.random((1, 4)) < 0.5).astype(np.float64)
    x[0, 0] = 1.0        # so that the followed input weight enc.h1.W[0, 0] has a non-zero gradient
    eps = rng.standard_normal((1, 1, 2))
    return vae, x, eps


def _row(name, j, formula, library, numeric):
    return {"derivative": name, "j": j, "formula": float(formula), "library": float(library),
            "finite_difference": float(numeric),
            "rel_error": max(relative_error(formula, numeric), relative_error(library, numeric))}


def local_derivatives(mu, logvar, eps):
    """Every local derivative at the node and of the KL, for each latent j.

    mu, logvar: (1, Z); eps: (1, 1, Z).  Returns a list of rows (dicts): the formula's value,
    the value the library's backward function returns, the finite difference, and the relative
    error (the worse of formula and library against the finite difference).
    """
    mu, logvar = mu.copy(), logvar.copy()
    sigma, sigma_cache = logvar_to_sigma_forward(logvar)
    sigma = sigma.copy()
    z, sample_cache = sample_forward(mu, logvar, eps)
    _, z_cache = reparameterize_forward(mu, sigma, eps)
    _, kl_cache = D.kl_standard_normal_forward(mu, logvar)
    dmu_kl, dlogvar_kl = D.kl_standard_normal_backward(np.ones(1), kl_cache)
    rows = []
    for j in range(mu.shape[1]):
        unit = np.zeros_like(z)
        unit[0, 0, j] = 1.0                                    # backprop dz = e_j: row j of the Jacobian
        dmu, dsigma = reparameterize_backward(unit, z_cache)
        dmu_s, dlogvar_s = sample_backward(unit, sample_cache)
        dsig_dlv = logvar_to_sigma_backward(np.eye(1, mu.shape[1], j), sigma_cache)
        s, e = sigma[0, j], eps[0, 0, j]

        def z_j_of(m=mu, sg=sigma, lv=logvar, how="reparam"):
            if how == "reparam":
                return float(reparameterize_forward(m, sg, eps)[0][0, 0, j])
            return float(sample_forward(m, lv, eps)[0][0, 0, j])

        rows.append(_row("dz/dmu = 1", j, 1.0, dmu[0, j], fd(lambda: z_j_of(), mu, (0, j))))
        rows.append(_row("dz/dsigma = eps", j, e, dsigma[0, j], fd(lambda: z_j_of(), sigma, (0, j))))
        rows.append(_row("dsigma/dlogvar = sigma/2", j, s / 2, dsig_dlv[0, j],
                         fd(lambda: float(logvar_to_sigma_forward(logvar)[0][0, j]), logvar, (0, j))))
        rows.append(_row("dz/dlogvar = eps*sigma/2", j, e * s / 2, dlogvar_s[0, j],
                         fd(lambda: z_j_of(how="sample"), logvar, (0, j))))
        kl = lambda: float(D.kl_standard_normal_forward(mu, logvar)[0][0])    # noqa: E731
        rows.append(_row("dKL/dmu = mu", j, mu[0, j], dmu_kl[0, j], fd(kl, mu, (0, j))))
        rows.append(_row("dKL/dlogvar = (exp(logvar)-1)/2", j, (np.exp(logvar[0, j]) - 1) / 2, dlogvar_kl[0, j],
                         fd(kl, logvar, (0, j))))
    return rows


def _elbo_of(vae, x, eps):
    return lambda: float(elbo_forward(vae.params, vae.arch, x, eps, "B")[0][0])


def weight_paths(vae, x, eps, i=0, j=0, k=0):
    """One weight's gradient of the bound, term by term through the stochastic node.

    Follows enc.mu.W[i, j], enc.logvar.W[i, j] (hidden unit i -> latent j) and enc.h1.W[k, i]
    (input k -> hidden unit i).  Returns (terms, totals): terms are rows {weight, path, factors,
    value}; totals are rows {weight, sum_of_terms, elbo_backward, finite_difference, rel_error}.
    """
    params, arch = vae.params, vae.arch
    (mu, logvar), _ = encoder_forward(params, arch, x)
    h, _ = mlp_forward(params, "enc", x, 1, arch.activation)          # the encoder's hidden layer (1, H)
    sigma = np.exp(0.5 * logvar)
    z, _ = sample_forward(mu, logvar, eps)
    dec_out, dec_cache = decoder_forward(params, arch, z)
    _, lik_cache = log_likelihood_forward(arch.likelihood, x, dec_out)
    g, _ = decoder_backward(log_likelihood_backward(np.ones((1, 1)), lik_cache, arch.likelihood), dec_cache)
    g = g[0, 0]                                                        # d log p(x|z) / dz, (Z,)
    e, s, m, lv = eps[0, 0], sigma[0], mu[0], logvar[0]

    # what reaches mu_j and logvar_j from each path (d elbo / d mu_j, d elbo / d logvar_j)
    rec_mu, kl_mu = g * 1.0, -m                                       # dz/dmu = 1;  -dKL/dmu = -mu
    rec_lv, kl_lv = g * e * s / 2, -(np.exp(lv) - 1) / 2               # dz/dlogvar = eps sigma / 2
    terms = [
        {"weight": f"enc.mu.W[{i},{j}]", "path": "reconstruction",
         "factors": f"dlogp/dz_{j} * dz/dmu * dmu/dW = {g[j]:.6g} * 1 * h_{i}({h[0, i]:.6g})",
         "value": rec_mu[j] * h[0, i]},
        {"weight": f"enc.mu.W[{i},{j}]", "path": "KL",
         "factors": f"-dKL/dmu_{j} * dmu/dW = -mu_{j}({m[j]:.6g}) * h_{i}({h[0, i]:.6g})",
         "value": kl_mu[j] * h[0, i]},
        {"weight": f"enc.logvar.W[{i},{j}]", "path": "reconstruction",
         "factors": (f"dlogp/dz_{j} * dz/dsigma * dsigma/dlogvar * dlogvar/dW = "
                     f"{g[j]:.6g} * eps({e[j]:.6g}) * sigma/2({s[j] / 2:.6g}) * h_{i}({h[0, i]:.6g})"),
         "value": rec_lv[j] * h[0, i]},
        {"weight": f"enc.logvar.W[{i},{j}]", "path": "KL",
         "factors": f"-dKL/dlogvar_{j} * dlogvar/dW = -(exp({lv[j]:.6g})-1)/2 * h_{i}({h[0, i]:.6g})",
         "value": kl_lv[j] * h[0, i]},
    ]
    # enc.h1.W[k, i]: every latent's mu and logvar depend on h_i -- four paths per latent, summed at h_i
    dtanh = 1.0 - h[0, i] ** 2
    Wm, Wl = params["enc.mu.W"], params["enc.logvar.W"]
    for jj in range(arch.z_dim):
        for path, via, d_mu_or_lv, W in (("reconstruction", "mu", rec_mu[jj], Wm), ("KL", "mu", kl_mu[jj], Wm),
                                        ("reconstruction", "logvar", rec_lv[jj], Wl),
                                        ("KL", "logvar", kl_lv[jj], Wl)):
            terms.append({"weight": f"enc.h1.W[{k},{i}]", "path": f"{path} via {via}_{jj}",
                          "factors": (f"d elbo/d{via}_{jj}({d_mu_or_lv:.6g}) * W_{via}[{i},{jj}]({W[i, jj]:.6g})"
                                      f" * (1-h_{i}^2)({dtanh:.6g}) * x_{k}({x[0, k]:.6g})"),
                          "value": d_mu_or_lv * W[i, jj] * dtanh * x[0, k]})

    _, cache = elbo_forward(params, arch, x, eps, "B")
    grads = elbo_backward(np.ones(1), cache)                           # d elbo / d theta (delbo = +1)
    totals = []
    for name, idx in (("enc.mu.W", (i, j)), ("enc.logvar.W", (i, j)), ("enc.h1.W", (k, i))):
        label = f"{name}[{idx[0]},{idx[1]}]"
        total = float(sum(t["value"] for t in terms if t["weight"] == label))
        numeric = fd(_elbo_of(vae, x, eps), params[name], idx)
        analytic = float(grads[name][idx])
        totals.append({"weight": label, "sum_of_terms": total, "elbo_backward": analytic,
                       "finite_difference": numeric,
                       "rel_error": max(relative_error(total, numeric), relative_error(analytic, numeric),
                                        relative_error(total, analytic))})
    return terms, totals


def plot_tangents(vae, x, eps, totals, path):
    """The bound along each followed weight, with the tangent whose slope elbo_backward gives."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(totals), figsize=(4.2 * len(totals), 3.4))
    f = _elbo_of(vae, x, eps)
    for ax, row in zip(axes, totals):
        name, idx = row["weight"].split("[")
        idx = tuple(int(v) for v in idx.rstrip("]").split(","))
        p = vae.params[name]
        w0 = p[idx]
        ts = np.linspace(-1.0, 1.0, 81)
        values = []
        for t in ts:
            p[idx] = w0 + t
            values.append(f())
        p[idx] = w0                                                    # restored exactly
        f0 = f()
        ax.plot(w0 + ts, values, color="C0", label="elbo (eps fixed)")
        ax.plot(w0 + ts, f0 + row["elbo_backward"] * ts, "--", color="C3",
                label=f"tangent, slope {row['elbo_backward']:.4g}")
        ax.plot([w0], [f0], "o", color="k", ms=4)
        ax.set_xlabel(row["weight"])
        ax.set_title(f"terms sum to {row['sum_of_terms']:.6g}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("per-datapoint bound")
    fig.suptitle("One weight at a time: the bound and the gradient that crosses the node", fontsize=10)
    save_figure(fig, path)


def _main(argv):
    p = study_parser("reparam_by_hand", __doc__)
    p.add_argument("--init-std", type=float, default=0.5,
                   help="std of the N(0, s^2) initialization (default 0.5, so every term is visible)")
    args = p.parse_args(argv)
    require(np.isfinite(args.init_std) and args.init_std > 0, f"--init-std must be positive, got {args.init_std}")
    out = make_out(args.out)

    vae, x, eps = make_setup(args.seed, args.init_std)
    (mu, logvar), _ = encoder_forward(vae.params, vae.arch, x)
    print(f"{vae!r}, one datapoint x = {x[0].astype(int).tolist()}, eps = {np.round(eps[0, 0], 6).tolist()}, "
          f"seed {args.seed}")
    print(f"mu = {np.round(mu[0], 6).tolist()}, logvar = {np.round(logvar[0], 6).tolist()}, "
          f"sigma = {np.round(np.exp(0.5 * logvar[0]), 6).tolist()}\n")

    local = local_derivatives(mu, logvar, eps)
    header = ["derivative", "j", "formula", "library backward", "finite difference", "rel. error"]
    rows = [[r["derivative"], r["j"], f"{r['formula']:.10g}", f"{r['library']:.10g}",
             f"{r['finite_difference']:.10g}", f"{r['rel_error']:.1e}"] for r in local]
    table1 = markdown_table(header, rows)
    write_text(os.path.join(out, "local_derivatives.md"), table1)
    write_csv(os.path.join(out, "local_derivatives.csv"), header, rows)
    print("Local derivatives at the stochastic node and of the KL:\n" + table1)

    terms, totals = weight_paths(vae, x, eps)
    header_t = ["weight", "path", "factors", "value"]
    rows_t = [[t["weight"], t["path"], t["factors"], f"{t['value']:.10g}"] for t in terms]
    header_s = ["weight", "sum of terms", "elbo_backward", "finite difference", "rel. error"]
    rows_s = [[r["weight"], f"{r['sum_of_terms']:.12g}", f"{r['elbo_backward']:.12g}",
               f"{r['finite_difference']:.12g}", f"{r['rel_error']:.1e}"] for r in totals]
    table2 = markdown_table(header_t, rows_t) + "\n" + markdown_table(header_s, rows_s)
    write_text(os.path.join(out, "weight_paths.md"), table2)
    write_csv(os.path.join(out, "weight_paths.csv"), header_t + ["sum of terms", "elbo_backward", "finite difference"],
              [r + [""] * 3 for r in rows_t] + [[r[0], "total", "", "", r[1], r[2], r[3]] for r in rows_s])
    print("One weight's gradient of the bound, path by path:\n" + table2)
    plot_tangents(vae, x, eps, totals, os.path.join(out, "reparam_by_hand.png"))
    print(f"outputs in {out}/\n")

    worst_local = max(r["rel_error"] for r in local)
    worst_total = max(r["rel_error"] for r in totals)
    kl_share = [abs(sum(t["value"] for t in terms if t["weight"] == r["weight"] and t["path"].startswith("KL")))
                / max(sum(abs(t["value"]) for t in terms if t["weight"] == r["weight"]), 1e-300) for r in totals]
    verdict = "match" if max(worst_local, worst_total) <= TOL else "DO NOT match"
    print(f"All {len(local)} local derivatives {verdict} their finite differences (worst relative error "
          f"{worst_local:.1e}), and the path-by-path sums equal elbo_backward and the finite difference to "
          f"{worst_total:.1e} (tolerance {TOL:.0e}); the KL path carries {fmt(100 * min(kl_share), '.0f')}-"
          f"{fmt(100 * max(kl_share), '.0f')}% of the absolute terms of the followed weights, so leaving it out "
          f"(or adding it twice) would be a visible error.")
    return 0 if max(worst_local, worst_total) <= TOL else 1


def main(argv=None):
    return run(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
