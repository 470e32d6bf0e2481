"""Gradient checking: every hand-written gradient against central finite differences.

Two ways to compare an analytic gradient g of a scalar f(theta) with f itself:

* element by element (small models):  (f(theta + h e_i) - f(theta - h e_i)) / 2h  vs  g_i;
* along random directions (any size, two evaluations of f per direction):
  (f(theta + h d) - f(theta - h d)) / 2h  vs  <g, d>,  with d ~ N(0, I) of the
  tensor's shape (HIPS/autograd's trick: O(1) evaluations however large the tensor).

Both report, per parameter tensor, a relative error

    max |analytic - numeric| / max(max |analytic|, max |numeric|)

i.e. the worst disagreement relative to the tensor's own scale: a wrong factor
in even one element shows up as a large error, while round-off in elements that
are almost zero does not masquerade as one.

Run ``python -m npvae.gradcheck --help`` for the command-line table.
"""
import argparse
import sys
from dataclasses import dataclass

import numpy as np

TINY = 1e-300


def relative_error(analytic, numeric):
    """max |a - n| / max(max |a|, max |n|); 0 when both are exactly zero."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
    return float(np.abs(a - n).max(initial=0.0) / max(scale, TINY))


def central_difference(f, x, direction, h):
    """(f(x + h d) - f(x - h d)) / 2h: the directional derivative of the scalar f() along d.

    The array x is perturbed in place and restored exactly.  Error O(h^2) from
    truncation plus ~eps|f|/h from round-off in f.
    """
    saved = x.copy()
    try:
        x[...] = saved + h * direction
        f_plus = f()
        x[...] = saved - h * direction
        f_minus = f()
    finally:
        x[...] = saved
    return (f_plus - f_minus) / (2.0 * h)


def richardson(estimate, h0=1e-2, shrink=1.4, n_steps=10):
    """Ridders' tableau: estimate(h) at h0, h0/shrink, ... extrapolated to h -> 0, for any
    difference quotient whose error is a series in h^2 (central first or second differences).

    Returns (value, error estimate).  Stops when the higher orders start to get worse, i.e. when
    round-off starts to win (Numerical Recipes, ``dfridr``)."""
    table = [[estimate(h0)]]
    best, err, h = table[0][0], np.inf, h0
    for i in range(1, n_steps):
        h /= shrink
        row = [estimate(h)]
        fac = shrink * shrink
        for j in range(1, i + 1):
            row.append((row[j - 1] * fac - table[i - 1][j - 1]) / (fac - 1.0))
            fac *= shrink * shrink
            err_j = max(abs(row[j] - row[j - 1]), abs(row[j] - table[i - 1][j - 1]))
            if err_j <= err:
                best, err = row[j], err_j
        table.append(row)
        if abs(row[i] - table[i - 1][i - 1]) >= 2.0 * err:   # higher order is only getting worse
            break
    return best, err


def ridders_derivative(f, x, direction, h0=1e-2, shrink=1.4, n_steps=10):
    """Central differences at shrinking steps h0, h0/1.4, ..., extrapolated to h -> 0 (Ridders' method).

    Returns (derivative, error estimate).  One fixed h cannot serve every tensor:
    a loss of ~500 nats carries ~1e-13 of round-off, which swamps a derivative
    of 1e-4 at h = 1e-6, while a large h meets curvature.  Richardson's tableau
    cancels the h^2, h^4, ... terms and stops when round-off starts to win.
    """
    return richardson(lambda h: central_difference(f, x, direction, h), h0, shrink, n_steps)


def numerical_gradient(f, x, h=1e-6, indices=None):
    """Central-difference gradient of the scalar f() with respect to the array x (perturbed in place).

    indices: an iterable of index tuples to evaluate (default: every element).
    Returns an array shaped like x (NaN where not evaluated).
    """
    grad = np.full(x.shape, np.nan)
    it = np.ndindex(*x.shape) if indices is None else indices
    for idx in it:
        saved = x[idx]
        try:
            x[idx] = saved + h
            f_plus = f()
            x[idx] = saved - h
            f_minus = f()
        finally:
            x[idx] = saved
        grad[idx] = (f_plus - f_minus) / (2.0 * h)
    return grad


@dataclass
class CheckRow:
    """One row of the table: a parameter tensor and how its gradient compared."""
    name: str
    shape: tuple
    analytic: float      # the entry (or directional derivative) with the largest error
    numeric: float
    rel_error: float
    n_checked: int       # elements or directions


def check_elements(f, params, grads, h=1e-2, max_elements=None, rng=None):
    """Element-by-element check of every tensor in params (all elements, or a random subset of max_elements)."""
    rows = []
    for name, p in params.items():
        idx = list(np.ndindex(*p.shape))
        if max_elements is not None and len(idx) > max_elements:
            rng = rng if rng is not None else np.random.default_rng(0)
            idx = [idx[i] for i in rng.choice(len(idx), max_elements, replace=False)]
        a = np.array([grads[name][i] for i in idx], dtype=np.float64)
        n = np.empty(len(idx))
        for k, i in enumerate(idx):
            unit = np.zeros_like(p)
            unit[i] = 1.0
            n[k], _ = ridders_derivative(f, p, unit, h)
        worst = int(np.argmax(np.abs(a - n)))
        rows.append(CheckRow(name, p.shape, a[worst], n[worst], relative_error(a, n), len(idx)))
    return rows


def check_directions(f, params, grads, h=1e-2, n_directions=3, rng=None):
    """Directional check of every tensor: d ~ N(0, I) shaped like the tensor, <g, d> vs the difference quotient."""
    rng = rng if rng is not None else np.random.default_rng(0)
    rows = []
    for name, p in params.items():
        worst = None
        for _ in range(n_directions):
            d = rng.standard_normal(p.shape).astype(p.dtype)
            a = float(np.vdot(grads[name].astype(np.float64), d.astype(np.float64)))
            n, _ = ridders_derivative(f, p, d, h)
            err = relative_error(a, n)
            if worst is None or err > worst[2]:
                worst = (a, n, err)
        rows.append(CheckRow(name, p.shape, worst[0], worst[1], worst[2], n_directions))
    return rows


def check_vae(vae, x, eps, estimator="B", mode="directions", h=None, n_directions=3, max_elements=None,
              rng=None, kl_weight=1.0):
    """Check vae.loss_and_grads against finite differences of vae.elbo (kl_weight = 1) or, for a KL
    weight beta != 1, of the weighted objective (``npvae.model.kl_weighted_objective``), computed by
    the forward pass alone.  Returns a list of CheckRow."""
    from .model import elbo_forward, kl_weighted_objective

    if kl_weight == 1.0:
        _, grads = vae.loss_and_grads(x, eps, estimator)
    else:
        _, grads = vae.loss_and_grads(x, eps, estimator, kl_weight)

    def loss():
        if kl_weight == 1.0:
            return -float(np.mean(vae.elbo(x, eps, estimator), dtype=np.float64))
        elbo, cache = elbo_forward(vae.params, vae.arch, x, eps, estimator)
        return -float(np.mean(kl_weighted_objective(elbo, cache, kl_weight), dtype=np.float64))

    h = 1e-2 if h is None else h
    if mode == "directions":
        return check_directions(loss, vae.params, grads, h, n_directions, rng)
    if mode == "elements":
        return check_elements(loss, vae.params, grads, h, max_elements, rng)
    raise ValueError(f"unknown mode {mode!r}; choose 'directions' or 'elements'")


def format_table(rows, tol=None):
    lines = [f"{'parameter':<16} {'shape':<12} {'checked':>7} {'analytic':>16} {'numeric':>16} {'rel. error':>10}"]
    for r in rows:
        flag = "" if tol is None or r.rel_error <= tol else "  FAIL"
        lines.append(f"{r.name:<16} {str(r.shape):<12} {r.n_checked:>7} {r.analytic:>16.9e} {r.numeric:>16.9e} "
                     f"{r.rel_error:>10.2e}{flag}")
    return "\n".join(lines)


def main(argv=None):
    from .model import VAE

    p = argparse.ArgumentParser(prog="python -m npvae.gradcheck", description=(
        "Check npvae's hand-written gradients against central finite differences, one row per parameter tensor."))
    p.add_argument("--x-dim", type=int, default=784)
    p.add_argument("--z-dim", type=int, default=20)
    p.add_argument("--hidden", type=str, default="500", help="hidden widths, e.g. 500 or 200,100")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli")
    p.add_argument("--estimator", choices=["A", "B"], default="B")
    p.add_argument("--kl-weight", type=float, default=1.0,
                   help="beta, the weight of the KL term in the objective checked (1: the bound)")
    p.add_argument("--activation", default="tanh")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--samples", "-L", type=int, default=1, help="L, samples of z per datapoint")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--mode", choices=["directions", "elements"], default="directions")
    p.add_argument("--directions", type=int, default=3, help="random directions per tensor (mode=directions)")
    p.add_argument("--max-elements", type=int, default=20, help="elements per tensor (mode=elements); 0 = all")
    p.add_argument("--step", type=float, default=1e-2, help="first (largest) finite-difference step of Ridders' method")
    p.add_argument("--init-std", type=float, default=0.01,
                   help="std of the N(0, s^2) initialization (paper: 0.01)")
    p.add_argument("--checkpoint", default=None,
                   help="a training run's folder: check the trained model (its sizes come from its checkpoint)")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (np.isfinite(args.kl_weight) and args.kl_weight >= 0):
        p.error(f"--kl-weight must be a finite number >= 0, got {args.kl_weight}")

    dtype = np.dtype(args.dtype)
    hidden = tuple(int(w) for w in args.hidden.split(","))
    rng = np.random.default_rng(args.seed)
    trained = None
    if args.checkpoint:
        from .runs import RunLoadError, load_run
        try:
            trained = load_run(args.checkpoint)          # its model, in the run's dtype, and its TrainConfig
        except RunLoadError as e:
            p.error(f"--checkpoint {args.checkpoint}: {' '.join(str(e).split())}")
        args.x_dim, args.z_dim = trained.vae.arch.x_dim, trained.config.nz
        hidden, args.likelihood, args.activation = (trained.config.hidden, trained.config.likelihood(),
                                                    trained.config.activation)
    # built (and drawn from rng) as without --checkpoint, so that x and eps do not depend on where the
    # parameters come from; then it takes the trained values, in --dtype
    vae = VAE(args.x_dim, args.z_dim, hidden, args.likelihood, seed=rng, dtype=dtype,
              activation=args.activation, init_std=args.init_std,
              decoder_var=(trained.config.decoder_var or None) if trained is not None else None)
    if trained is not None:
        for k in vae.params:
            vae.params[k][...] = trained.vae.params[k]
    if args.likelihood == "bernoulli":
        x = (rng.random((args.batch, args.x_dim)) < 0.3).astype(dtype)    # binary, like binarized MNIST
    else:
        x = rng.random((args.batch, args.x_dim)).astype(dtype)             # grey levels in [0, 1)
    eps = rng.standard_normal((args.samples, args.batch, args.z_dim)).astype(dtype)
    h = args.step
    rows = check_vae(vae, x, eps, args.estimator, args.mode, h, args.directions, args.max_elements or None, rng,
                     kl_weight=args.kl_weight)

    where = f"trained parameters from {args.checkpoint}" if trained else f"init_std={args.init_std}"
    print(f"{vae!r}\nbatch={args.batch} L={args.samples} estimator={args.estimator} kl_weight={args.kl_weight:g} "
          f"mode={args.mode} "
          f"h={h:.1e} {where} seed={args.seed}")
    print(format_table(rows, args.tol))
    worst = max(r.rel_error for r in rows)
    ok = worst <= args.tol
    print(f"max relative error {worst:.2e} ({'<=' if ok else '>'} tol {args.tol:.0e})")
    if dtype == np.float32:
        print("note: float32 differences carry ~1e-3 round-off; check gradients in float64.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
