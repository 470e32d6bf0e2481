"""The finite-difference step size: where truncation error meets round-off (the "V").

    python examples/gradcheck_study.py                 # the paper's 784-500-20 model, every tensor (~2 min)
    python examples/gradcheck_study.py --param dec.logits.W --per-decade 8
    python examples/gradcheck_study.py --smoke         # a 64-32-4 model, a few seconds

For each parameter tensor, along one random direction d ~ N(0, I) of the whole tensor, the
directional derivative of the loss f = -mean(elbo) is estimated by central differences
(f(t+h) - f(t-h)) / 2h and forward differences (f(t+h) - f(t)) / h for h from 1e-1 to 1e-12,
with the model evaluated in float64 and in float32 (npvae.VAE(..., dtype=np.float32)).  Each
estimate is compared with <g, d>, g the float64 analytic gradient (elbo_backward) at the same
parameters -- for float32, the float32 parameters cast up -- so the curves show only the
finite-difference error.

Error model (each evaluation of f carries a round-off of about eps_mach |f|):
    central:  |f'''| h^2 / 6  +  eps |f| / h     ->  best h ~ (3 eps |f| / |f'''|)^(1/3)
    forward:  |f''|  h   / 2  +  2 eps |f| / h   ->  best h ~ 2 (eps |f| / |f''|)^(1/2)
f'' and f''' along d come from the analytic gradient: phi(t) = <grad f(theta + t d), d> = f'(t),
differentiated once (Ridders) and twice (Richardson on second differences).  Ridders'
extrapolation (npvae.gradcheck.ridders_derivative) is drawn as a horizontal line.

Outputs in --out: gradcheck_study.png (the chosen --param), gradcheck_table.md/.csv (every
tensor), curves.csv (every error at every h).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import make_out, markdown_table, pyplot, require, run, save_figure, study_parser  # noqa: E402
from _study import write_csv, write_text  # noqa: E402

from npvae import VAE  # noqa: E402
from npvae.gradcheck import central_difference, richardson, ridders_derivative  # noqa: E402

DTYPES = (np.float64, np.float32)


def make_problem(seed, x_dim=784, hidden=500, z_dim=20, batch=20, init_std=0.01):
    """A float64 model at its N(0, init_std^2) initialization, binary data x (batch, x_dim) with
    pixels on with probability 0.3 (like binarized MNIST, as in ``python -m npvae.gradcheck``), fixed
    noise eps (1, batch, z_dim), and the generator (for the directions)."""
    rng = np.random.default_rng(seed)
    vae = VAE(x_dim, z_dim, hidden, "bernoulli", seed=rng, init_std=init_std)
    x = (rng.random((batch, x_dim)) < 0.3).astype(np.float64)
    eps = rng.standard_normal((1, batch, z_dim))
    return vae, x, eps, rng


def as_dtype(vae, dtype):
    """A copy of vae whose parameters are vae's rounded to dtype (same architecture)."""
    a = vae.arch
    other = VAE(a.x_dim, a.z_dim, a.enc_hidden, a.likelihood, seed=0, dtype=dtype, activation=a.activation)
    for k, p in vae.params.items():
        other.params[k][...] = p.astype(dtype)
    return other


def loss_fn(vae, x, eps):
    """f() = -mean(elbo) at vae's current parameters; the mean accumulates in float64 (as check_vae does)."""
    x, eps = x.astype(vae.dtype), eps.astype(vae.dtype)
    return lambda: -float(np.mean(vae.elbo(x, eps), dtype=np.float64))


def forward_difference(f, x, direction, h, f0):
    """(f(x + h d) - f(x)) / h, with f(x) = f0 given; x perturbed in place and restored exactly."""
    saved = x.copy()
    try:
        x[...] = saved + h * direction
        f_plus = f()
    finally:
        x[...] = saved
    return (f_plus - f0) / h


def ridders_second_derivative(f, x, direction, h0=1e-1, shrink=2.0, n_steps=8):
    """f''(0) along direction from second differences (f(h) - 2 f(0) + f(-h)) / h^2 at shrinking h,
    extrapolated by npvae.gradcheck.richardson (the error is again a series in h^2)."""
    saved = x.copy()

    def at(t):
        try:
            x[...] = saved + t * direction
            return f()
        finally:
            x[...] = saved

    f0 = f()
    return richardson(lambda h: (at(h) - 2.0 * f0 + at(-h)) / (h * h), h0, shrink, n_steps)


def derivatives_along(vae, x, eps, name, d):
    """|f|, f', f'', f''' of the float64 loss along d at vae's parameters (f' analytic = <g, d>)."""
    f = loss_fn(vae, x, eps)
    p = vae.params[name]

    def phi():                                   # f'(t) = <grad f(theta + t d), d>, exact up to round-off
        _, g = vae.loss_and_grads(x, eps)
        return float(np.vdot(g[name], d))

    f2, _ = ridders_derivative(phi, p, d, h0=1e-2)
    f3, _ = ridders_second_derivative(phi, p, d, h0=1e-1)
    return {"f": f(), "f1": phi(), "f2": f2, "f3": f3}


def predicted_best_h(eps_mach, f, f2, f3):
    """Minimizers of the error models in the module docstring."""
    h_central = (3.0 * eps_mach * abs(f) / max(abs(f3), 1e-300)) ** (1.0 / 3.0)
    h_forward = 2.0 * np.sqrt(eps_mach * abs(f) / max(abs(f2), 1e-300))
    return h_central, h_forward


def rel_err(analytic, numeric):
    """|numeric - analytic| / |analytic|.

    Not npvae.gradcheck.relative_error, which divides by max(|analytic|, |numeric|) and so
    saturates at 1 once round-off makes the numeric value large: that would flatten the
    round-off branch of the V.  Below 0.1 the two agree to 10%.
    """
    return abs(numeric - analytic) / max(abs(analytic), 1e-300)


def sweep(vae64, x, eps, name, d, hs, dtype):
    """Relative errors of central and forward differences at every h, and of Ridders' estimate.

    The model is evaluated in dtype; the reference is the float64 analytic <g, d> at the same
    (rounded) parameters and along the same (rounded) direction.  Also returns the central
    estimates themselves (exactly 0 where the step rounded away in the parameters' precision).
    """
    model = as_dtype(vae64, dtype)
    reference = as_dtype(model, np.float64)          # float64 at exactly the rounded parameters
    d_model = d.astype(dtype)
    _, g = reference.loss_and_grads(x, eps.astype(dtype).astype(np.float64))
    analytic = float(np.vdot(g[name], d_model.astype(np.float64)))
    f = loss_fn(model, x, eps)
    p = model.params[name]
    f0 = f()
    central_values = np.array([central_difference(f, p, d_model, h) for h in hs])
    central = np.array([rel_err(analytic, n) for n in central_values])
    forward = np.array([rel_err(analytic, forward_difference(f, p, d_model, h, f0)) for h in hs])
    ridders, _ = ridders_derivative(f, p, d_model, h0=1e-2)
    return {"analytic": analytic, "f": f0, "central": central, "forward": forward,
            "central_values": central_values, "ridders": rel_err(analytic, ridders)}


def observed_roundoff(hs, errors, values, analytic, best_index):
    """The absolute noise delta in f implied by the round-off branch of the central curve, where
    error ~ delta / (h |f'|): the median of error * |f'| * h over the steps at least 30x below the best h."""
    # steps where the perturbation itself rounded away (f(+h) == f(-h)) say nothing about f's noise
    branch = (hs <= hs[best_index] / 30.0) & (values != 0)
    if not branch.any():
        return np.nan
    return float(np.median(errors[branch] * abs(analytic) * hs[branch]))


def study(vae, x, eps, rng, names, hs):
    """Every tensor in names, both dtypes.  Returns (rows, curves): a row per (tensor, dtype)."""
    rows, curves = [], {}
    for name in names:
        d = rng.standard_normal(vae.params[name].shape)
        der = derivatives_along(vae, x, eps, name, d)
        for dtype in DTYPES:
            s = sweep(vae, x, eps, name, d, hs, dtype)
            eps_mach = float(np.finfo(dtype).eps)
            hc_pred, hf_pred = predicted_best_h(eps_mach, s["f"], der["f2"], der["f3"])
            ic, iF = int(np.argmin(s["central"])), int(np.argmin(s["forward"]))
            delta = observed_roundoff(hs, s["central"], s["central_values"], s["analytic"], ic)
            hc_meas = (3.0 * delta / max(abs(der["f3"]), 1e-300)) ** (1.0 / 3.0)
            rows.append({"tensor": name, "dtype": np.dtype(dtype).name, "f": s["f"], "f1": s["analytic"],
                         "f2": der["f2"], "f3": der["f3"], "eps_mach": eps_mach,
                         "h_central": float(hs[ic]), "h_central_pred": hc_pred, "h_central_meas": hc_meas,
                         "err_central": float(s["central"][ic]),
                         "h_forward": float(hs[iF]), "h_forward_pred": hf_pred, "err_forward": float(s["forward"][iF]),
                         "err_ridders": s["ridders"], "delta_obs": delta,
                         "delta_over_eps_f": delta / (eps_mach * abs(s["f"]))})
            curves[(name, np.dtype(dtype).name)] = s
    return rows, curves


def plot_curves(hs, curves, rows, name, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, dtype in zip(axes, ("float64", "float32")):
        s = curves[(name, dtype)]
        r = next(r for r in rows if r["tensor"] == name and r["dtype"] == dtype)
        a = abs(s["analytic"])
        ax.loglog(hs, s["central"], "o-", ms=3, color="C0", label="central (f(+h) - f(-h)) / 2h")
        ax.loglog(hs, s["forward"], "s-", ms=3, color="C1", label="forward (f(+h) - f) / h")
        # the error models, relative to |f'|: truncation + eps |f| round-off
        model_c = (abs(r["f3"]) * hs ** 2 / 6 + r["eps_mach"] * abs(r["f"]) / hs) / a
        model_f = (abs(r["f2"]) * hs / 2 + 2 * r["eps_mach"] * abs(r["f"]) / hs) / a
        ax.loglog(hs, model_c, ":", color="C0", lw=1, label="model |f'''|h²/6 + ε|f|/h")
        ax.loglog(hs, model_f, ":", color="C1", lw=1, label="model |f''|h/2 + 2ε|f|/h")
        ax.loglog([r["h_central"]], [r["err_central"]], "*", ms=14, color="C0", mec="k",
                  label=f"best central h = {r['h_central']:.0e} (pred. {r['h_central_pred']:.0e})")
        ax.loglog([r["h_forward"]], [r["err_forward"]], "*", ms=14, color="C1", mec="k",
                  label=f"best forward h = {r['h_forward']:.0e} (pred. {r['h_forward_pred']:.0e})")
        ax.axhline(max(r["err_ridders"], 1e-17), color="C2", ls="--",
                   label=f"Ridders' extrapolation: {r['err_ridders']:.1e}")
        ax.set_ylim(1e-16, 1e4)
        ax.set_xlabel("step h (along d ~ N(0, I) over the whole tensor)")
        ax.set_title(f"{name}, model in {dtype} (|f| = {abs(r['f']):.1f}, ε = {r['eps_mach']:.1e})", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")     # the empty corner: small h, small error
        ax.invert_xaxis()
    axes[0].set_ylabel("|numeric - <g, d>| / |<g, d>|  (g: float64 analytic)")
    fig.suptitle("Finite-difference error against step size: truncation (right) meets round-off (left)", fontsize=10)
    save_figure(fig, path)


TABLE_HEADER = ["tensor", "dtype", "|f|", "f' = <g,d>", "f''", "f'''", "best h central", "predicted",
                "predicted (measured noise)", "min error central", "best h forward", "predicted", "min error forward",
                "Ridders error",
                "round-off in f / (eps |f|)"]


def table_rows(rows):
    return [[r["tensor"], r["dtype"], f"{abs(r['f']):.4g}", f"{r['f1']:.4g}", f"{r['f2']:.3g}", f"{r['f3']:.3g}",
             f"{r['h_central']:.1e}", f"{r['h_central_pred']:.1e}", f"{r['h_central_meas']:.1e}",
             f"{r['err_central']:.1e}",
             f"{r['h_forward']:.1e}", f"{r['h_forward_pred']:.1e}", f"{r['err_forward']:.1e}",
             f"{r['err_ridders']:.1e}", f"{r['delta_over_eps_f']:.2g}"] for r in rows]


def _main(argv):
    p = study_parser("gradcheck_study", __doc__)
    p.add_argument("--param", default="enc.logvar.W", help="the tensor drawn in the figure (default enc.logvar.W)")
    p.add_argument("--per-decade", type=int, default=4, help="steps per decade of h between 1e-1 and 1e-12")
    p.add_argument("--batch", type=int, default=20, help="datapoints in the loss (its value is a mean: ~543 nats)")
    p.add_argument("--init-std", type=float, default=0.01, help="std of the N(0, s^2) initialization (paper: 0.01)")
    args = p.parse_args(argv)
    require(args.per_decade >= 1, f"--per-decade must be at least 1, got {args.per_decade}")
    require(args.batch >= 1, f"--batch must be positive, got {args.batch}")
    require(np.isfinite(args.init_std) and args.init_std > 0, f"--init-std must be positive, got {args.init_std}")
    sizes = dict(x_dim=64, hidden=32, z_dim=4) if args.smoke else dict(x_dim=784, hidden=500, z_dim=20)
    vae, x, eps, rng = make_problem(args.seed, batch=args.batch, init_std=args.init_std, **sizes)
    require(args.param in vae.params, f"--param must be one of {', '.join(vae.params)}; got {args.param!r}")
    out = make_out(args.out)
    hs = 10.0 ** -np.linspace(1, 12, 11 * args.per_decade + 1)

    print(f"{vae!r}, batch {args.batch}, L = 1, init_std {args.init_std}, seed {args.seed}; "
          f"{len(hs)} steps from 1e-1 to 1e-12")
    rows, curves = study(vae, x, eps, rng, list(vae.params), hs)

    body = table_rows(rows)
    table = markdown_table(TABLE_HEADER, body)
    write_text(os.path.join(out, "gradcheck_table.md"), table)
    write_csv(os.path.join(out, "gradcheck_table.csv"), TABLE_HEADER, body)
    write_csv(os.path.join(out, "curves.csv"), ["tensor", "dtype", "h", "central_rel_error", "forward_rel_error"],
              [[k[0], k[1], f"{h:.6e}", f"{c:.6e}", f"{fw:.6e}"]
               for k, s in curves.items() for h, c, fw in zip(hs, s["central"], s["forward"])])
    plot_curves(hs, curves, rows, args.param, os.path.join(out, "gradcheck_study.png"))
    print(table)
    print(f"outputs in {out}/\n")

    r64 = next(r for r in rows if r["tensor"] == args.param and r["dtype"] == "float64")
    r32 = next(r for r in rows if r["tensor"] == args.param and r["dtype"] == "float32")
    for r in (r64, r32):
        print(f"{args.param} {r['dtype']}: best h central {r['h_central']:.1e} (predicted {r['h_central_pred']:.1e}), "
              f"forward {r['h_forward']:.1e} (predicted {r['h_forward_pred']:.1e}); "
              f"min errors {r['err_central']:.1e} / "
              f"{r['err_forward']:.1e}; Ridders {r['err_ridders']:.1e}")
    off = {dt: float(np.median([abs(np.log10(r["h_central"] / r["h_central_pred"])) for r in rows
                                 if r["dtype"] == dt])) for dt in ("float64", "float32")}
    below = sum(r["err_ridders"] < r["err_central"] for r in rows if r["dtype"] == "float64")
    n64 = sum(r["dtype"] == "float64" for r in rows)
    eps_ratio = (np.finfo(np.float32).eps / np.finfo(np.float64).eps) ** (1 / 3)
    print(f"With |f| = {abs(r64['f']):.0f} nats the V's floor for {args.param} is {r64['err_central']:.0e} "
          f"(central, h = {r64['h_central']:.0e}) in float64 and {r32['err_central']:.0e} "
          f"(h = {r32['h_central']:.0e}) in float32 -- a {r32['h_central'] / r64['h_central']:.0f}x larger step, "
          f"against (eps32/eps64)^(1/3) = {eps_ratio:.0f} -- and over all tensors the observed best central h is "
          f"a median {off['float64']:.2f} decades from (3 eps |f| / |f'''|)^(1/3) in float64 "
          f"({off['float32']:.2f} in float32). Ridders' extrapolation beats the best fixed central step on "
          f"{below} of {n64} float64 tensors (here {r64['err_ridders']:.0e}).")
    return 0


def main(argv=None):
    return run(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
