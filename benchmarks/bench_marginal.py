"""Time the marginal-likelihood estimators, readable log p(x, z) against the fast one, interleaved.

    python benchmarks/bench_marginal.py                        # IS: 784-500-20, 1,000 points, k = 5000
    python benchmarks/bench_marginal.py --points=20 --dtype=both --rounds=2
    python benchmarks/bench_marginal.py --estimator=hmc        # Appendix D: 784-100-3, 300 points, float32
    python benchmarks/bench_marginal.py --quick                 # 10 points, k = 500 (or a short chain): a smoke run

--estimator=is times ``importance_sampled_log_px`` on the paper's MNIST model (784-500-20, k = 5000);
--estimator=hmc times ``hmc_log_px`` (the paper's settings: 200 burn-in transitions, 50 draws, 4 leapfrog
steps) on Figure 3's model with Nz = 3 (784-100-3).  Each round runs every dtype with ``fast=False``
(the readable log p(x, z): ``make_log_joint``'s default) and ``fast=True`` (``npvae.kernels``, what the
estimators use), one after the other, so that the machine's drift hits both alike; the table reports
each one's best round and the largest difference between their estimates.

The model is freshly initialized (N(0, 0.01^2), the paper's init) and x is drawn from it: the time
does not depend on the weights' values or on the data, only on the sizes.  Set OPENBLAS_NUM_THREADS=1
for one-core figures.
"""
import argparse
import os
import time

import numpy as np

from npvae import VAE
from npvae.marginal import hmc_log_px, importance_sampled_log_px

SIZES = {"is": dict(hidden=500, nz=20, points=1000, dtype="float64"),     # the paper's MNIST model
         "hmc": dict(hidden=100, nz=3, points=300, dtype="float32")}      # Figure 3's, Nz = 3


def run_estimator(args, vae, x, fast):
    """(seconds, log p(x) estimates) of one estimator run; every run draws the same noise (seed)."""
    rng = np.random.default_rng(args.seed + 1)
    start = time.perf_counter()
    if args.estimator == "is":
        log_px = importance_sampled_log_px(vae, x, args.k, rng=rng, chunk=args.chunk, fast=fast)
    else:
        log_px = hmc_log_px(vae, x, rng, n_samples=args.n_samples, burn_in=args.burn_in, fast=fast).log_px
    return time.perf_counter() - start, log_px


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estimator", choices=("is", "hmc"), default="is",
                    help="is: importance_sampled_log_px; hmc: hmc_log_px (Appendix D)")
    ap.add_argument("--points", type=int, default=None, help="datapoints (default: 1000 for is, 300 for hmc)")
    ap.add_argument("--k", type=int, default=5000, help="is: importance samples per datapoint")
    ap.add_argument("--chunk", type=int, default=4096, help="is: z per decoder call")
    ap.add_argument("--n_samples", type=int, default=50, help="hmc: posterior draws per datapoint")
    ap.add_argument("--burn_in", type=int, default=200, help="hmc: adapting transitions before the draws")
    ap.add_argument("--dtype", choices=("float64", "float32", "both"), default=None,
                    help="default: float64 for is, float32 for hmc")
    ap.add_argument("--paths", choices=("both", "fast", "readable"), default="both",
                    help="which log p(x, z) to time (both: side by side)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the best of them is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10 points, k = 500 (is) or 20 + 10 transitions (hmc)")
    args = ap.parse_args(argv)
    sizes = SIZES[args.estimator]
    args.points = sizes["points"] if args.points is None else args.points
    if args.quick:
        args.points, args.k, args.burn_in, args.n_samples = 10, 500, 20, 10
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype or sizes["dtype"],)
    paths = {"both": (False, True), "fast": (True,), "readable": (False,)}[args.paths]

    problems = {}
    for dtype in dtypes:
        rng = np.random.default_rng(args.seed)
        vae = VAE(784, sizes["nz"], sizes["hidden"], "bernoulli", seed=rng, dtype=np.dtype(dtype))
        x = (rng.random((args.points, 784)) < vae.decode(rng.standard_normal((args.points, sizes["nz"])))).astype(float)
        problems[dtype] = vae, x
        run_estimator(argparse.Namespace(**{**vars(args), "points": 2, "k": 10, "burn_in": 2, "n_samples": 4}),
                      vae, x[:2], True)                  # Numba's compilation (or cache load), not timed
    what = (f"k={args.k} chunk={args.chunk}" if args.estimator == "is"
            else f"burn_in={args.burn_in} n_samples={args.n_samples} n_leapfrog=4")
    print(f"{args.estimator}: 784-{sizes['hidden']}-{sizes['nz']} Bernoulli, points={args.points} {what}, "
          f"rounds={args.rounds}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)

    seconds, estimates = {}, {}
    for r in range(args.rounds):
        for dtype in dtypes:
            for fast in paths:
                s, log_px = run_estimator(args, *problems[dtype], fast)
                seconds.setdefault((dtype, fast), []).append(s)
                estimates[dtype, fast] = log_px
                print(f"  round {r + 1}  {dtype}  {'fast' if fast else 'readable':8s}  {s:7.2f} s", flush=True)

    print(f"{'dtype':8s} {'path':9s} {'best s':>8s} {'ms/point':>9s}  {'readable/fast':>13s}  mean log p(x)")
    for dtype in dtypes:
        for fast in paths:
            best = min(seconds[dtype, fast])
            ratio = (f"{min(seconds[dtype, False]) / best:13.2f}" if fast and False in paths else f"{'':13s}")
            print(f"{dtype:8s} {'fast' if fast else 'readable':9s} {best:8.2f} {best / args.points * 1e3:9.1f}  "
                  f"{ratio}  {np.nanmean(estimates[dtype, fast]):.4f}")
        if len(paths) == 2:
            diff = np.nanmax(np.abs(estimates[dtype, True] - estimates[dtype, False]))
            print(f"{dtype:8s} largest |log p(x) fast - readable| over the points: {diff:.2e}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
