"""Each Numba kernel against its NumPy reference, after a warm-up call (compilation excluded).

    python benchmarks/bench_kernels.py [--quick] [--repeats N]

Timed in interleaved rounds (this machine drifts 5-15% over minutes), on the shapes of
the paper's MNIST step: logits (L=1, M=100, 784), latent (100, 20).  Prints the median
and p10-p90 per variant and the ratio kernel / reference (below 1: the kernel is faster).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae.kernels import bernoulli_kl_grads, bernoulli_kl_grads_reference  # noqa: E402


def make_inputs(dtype, L=1, B=100, D=784, Z=20, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (L, B, D)).astype(dtype)
    x = (rng.random((B, D)) < 0.13).astype(dtype)
    mu, logvar = rng.standard_normal((B, Z)).astype(dtype), rng.uniform(-4, 1, (B, Z)).astype(dtype)
    return logits, x, mu, logvar


def bench(variants, rounds, inner):
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():          # interleaved: each round times every variant once
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t) / inner)
    return {k: np.array(v) * 1e6 for k, v in times.items()}    # microseconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 30)
    worst = 0.0
    for dtype in (np.float64, np.float32):
        inp = make_inputs(dtype)
        out = (np.empty(100, dtype), np.empty_like(inp[0]), np.empty_like(inp[2]), np.empty_like(inp[3]))
        for want in (False, True):
            variants = {
                "numpy reference": lambda: bernoulli_kl_grads_reference(*inp, 0.01, want),
                "numba kernel": lambda: bernoulli_kl_grads(*inp, 0.01, want),
                "numba kernel, out=": lambda: bernoulli_kl_grads(*inp, 0.01, want, out=out),
            }
            for fn in variants.values():
                fn()                                   # warm-up: compile, touch memory
            t = bench(variants, rounds, 20)
            ref = np.median(t["numpy reference"])
            print(f"\nbernoulli_kl_grads  {np.dtype(dtype).name}  want_elbo={want}   (microseconds per call)")
            for name, v in t.items():
                med = np.median(v)
                print(f"  {name:<20} median {med:8.1f}   p10-p90 {np.percentile(v, 10):8.1f}-{np.percentile(v, 90):8.1f}"
                      f"   ratio to reference {med / ref:5.2f}")
            worst = max(worst, np.median(t["numba kernel"]) / ref)
    print(f"\nslowest kernel/reference ratio: {worst:.2f}")


if __name__ == "__main__":
    main()
