"""Time importance_sampled_log_px on the paper's MNIST model (784-500-20, Bernoulli decoder).

    python benchmarks/bench_marginal.py                  # 1,000 points, k = 5000 (one run)
    python benchmarks/bench_marginal.py --points=100 --k=500 --dtype=float32
    python benchmarks/bench_marginal.py --quick           # 10 points, k = 500: a smoke run

The model is freshly initialized (N(0, 0.01^2), the paper's init) and x is drawn from it: the time
does not depend on the weights' values or on the data, only on the sizes.
"""
import argparse
import os
import time

import numpy as np

from npvae import VAE
from npvae.marginal import importance_sampled_log_px


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10 points, k = 500")
    args = ap.parse_args(argv)
    if args.quick:
        args.points, args.k = 10, 500
    rng = np.random.default_rng(args.seed)
    vae = VAE(784, 20, 500, "bernoulli", seed=rng, dtype=np.dtype(args.dtype))
    x = (rng.random((args.points, 784)) < vae.decode(rng.standard_normal((args.points, 20)))).astype(float)
    print(f"{vae!r}  points={args.points} k={args.k} chunk={args.chunk} "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} "
          f"load average at start {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    log_px, stderr = importance_sampled_log_px(vae, x, args.k, rng=rng, chunk=args.chunk, return_stderr=True)
    seconds = time.perf_counter() - start
    print(f"{seconds:.1f} s ({seconds / args.points * 1e3:.1f} ms per point, "
          f"{args.points * args.k / seconds:,.0f} z per second); mean log p(x) {log_px.mean():.3f}, "
          f"median stderr {np.median(stderr):.4f}; load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
