"""Each Numba kernel against its NumPy reference, after a warm-up call (compilation excluded).

    python benchmarks/bench_kernels.py [--quick] [--rounds N]

Timed in interleaved rounds (this machine drifts 5-15% over minutes), on the shapes of
the paper's MNIST step: logits (L=1, M=100, 784), hidden (100, 500), latent (100, 20),
parameters 795k, a 0/1 minibatch with 13% ones for the sparse first layer.  Prints the median
and p10-p90 per variant and the ratio kernel / reference (below 1: the kernel is faster).  The
references allocate their results, as NumPy code written the plain way does; the kernels write
into buffers they are given.  (The sparse kernels' references are the dense layer, so their ratio
is the sparse saving at 13%, timed with the process's BLAS threads.)
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import VAE  # noqa: E402
from npvae import kernels as F  # noqa: E402
from npvae.distributions import LOGVAR_MAX, LOGVAR_MIN  # noqa: E402
from npvae.kernels import (add_bias_neg_abs, add_bias_neg_abs_reference, bernoulli_kl_grads,  # noqa: E402
                           bernoulli_kl_grads_reference)

X_DIM, H, Z, M = 784, 500, 20, 100


def make_inputs(dtype, L=1, B=M, D=X_DIM, Z=Z, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (L, B, D)).astype(dtype)
    x = (rng.random((B, D)) < 0.13).astype(dtype)
    mu, logvar = rng.standard_normal((B, Z)).astype(dtype), rng.uniform(-4, 1, (B, Z)).astype(dtype)
    return logits, x, mu, logvar


def cases(dtype):
    """{kernel name: {"numpy reference": fn, "numba kernel": fn, ...}} on the paper's shapes."""
    rng = np.random.default_rng(1)
    t = np.dtype(dtype).type
    r = lambda *s: rng.standard_normal(s).astype(dtype)          # noqa: E731
    inp = make_inputs(dtype)
    out = (np.empty(M, dtype), np.empty_like(inp[0]), np.empty_like(inp[2]), np.empty_like(inp[3]))
    dbias = np.empty(X_DIM, dtype)
    table = {}
    for want in (False, True):
        table[f"bernoulli_kl_grads want_elbo={want}"] = {
            "numpy reference": lambda want=want: bernoulli_kl_grads_reference(*inp, 0.01, want),
            "numba kernel": lambda want=want: bernoulli_kl_grads(*inp, 0.01, want),
            "numba kernel, out=": lambda want=want: bernoulli_kl_grads(*inp, 0.01, want, out=out, dbias=dbias),
        }
    logits2, bias, work = r(M, X_DIM), r(X_DIM), np.empty((M, X_DIM), dtype)
    table["add_bias_neg_abs"] = {"numpy reference": lambda: add_bias_neg_abs_reference(logits2, bias),
                                 "numba kernel": lambda: add_bias_neg_abs(logits2, bias, work)}
    # the in-place kernels run thousands of times on the same arrays: h near 0 keeps dh from decaying
    # into subnormals (which would time the FPU's slow path), the zero biases leave mu and logvar as they are
    dh, h, db = r(M, H), np.tanh(1e-3 * r(M, H)), np.empty(H, dtype)
    table["tanh_backward_inplace"] = {"numpy reference": lambda: F.tanh_backward_reference(dh, h),
                                      "numba kernel": lambda: F.tanh_backward_inplace(dh, h, t(1), db)}
    # repeated in place, tanh drifts toward 0 slowly (x - x^3/3): values stay normal, and the float64
    # kernel has no branch, so the time does not depend on which side of its series threshold they are
    pre, tanh_work = r(M, H), np.empty(M * H, dtype)
    table["tanh_inplace"] = {"numpy reference": lambda: F.tanh_inplace_reference(pre),
                             "numba kernel": lambda: F.tanh_inplace(pre, tanh_work)}
    mu, lv, b_mu, b_lv, inside = r(M, Z), r(M, Z), r(Z), r(Z), np.empty((M, Z), bool)
    zero = np.zeros(Z, dtype)
    lo, hi = t(LOGVAR_MIN), t(LOGVAR_MAX)
    table["heads_bias_clamp"] = {
        "numpy reference": lambda: F.heads_bias_clamp_reference(mu, lv, b_mu, b_lv, lo, hi),
        "numba kernel": lambda: F.heads_bias_clamp(mu, lv, zero, zero, lo, hi, inside)}
    eps, sigma, z, dz = r(1, M, Z), np.exp(r(M, Z)), np.empty((1, M, Z), dtype), r(1, M, Z)
    table["reparameterize_into"] = {"numpy reference": lambda: F.reparameterize_into_reference(mu, sigma, eps),
                                    "numba kernel": lambda: F.reparameterize_into(mu, sigma, eps, z)}
    kl_mu, kl_lv = r(M, Z), r(M, Z)
    outs = [np.empty((M, Z), dtype), np.empty((M, Z), dtype), np.empty(Z, dtype), np.empty(Z, dtype)]
    table["reparameterize_backward_into"] = {
        "numpy reference": lambda: F.reparameterize_backward_into_reference(dz, eps, sigma, inside, kl_mu, kl_lv),
        "numba kernel": lambda: F.reparameterize_backward_into(dz, eps, sigma, inside, kl_mu, kl_lv, t(0.5), *outs)}
    # the first layer on a 0/1 minibatch with MNIST's 13% ones; the references are the readable dense layer
    x = inp[1]
    W, dh1, gW = 0.01 * r(X_DIM, H), r(M, H), np.empty((X_DIM, H), dtype)
    on_idx, on_count = np.empty((M, X_DIM), np.int32), np.empty(M, np.int32)
    col_start, col_rows = np.empty(X_DIM + 1, np.int32), np.empty(M * X_DIM, np.int32)
    h1 = np.empty((M, H), dtype)
    F.active_indices(x, on_idx, on_count)
    F.active_indices_by_column(on_idx, on_count, col_start, col_rows)
    table["active_indices + by_column"] = {
        "numpy reference": lambda: F.active_indices_reference(x),
        "numba kernel": lambda: (F.active_indices(x, on_idx, on_count),
                                 F.active_indices_by_column(on_idx, on_count, col_start, col_rows))}
    table["sparse_affine_forward_into"] = {
        "numpy reference": lambda: F.sparse_affine_forward_reference(x, W, bias[:H]),
        "numba kernel": lambda: F.sparse_affine_forward_into(on_idx, on_count, W, bias[:H], h1)}
    table["sparse_weight_grad_into"] = {
        "numpy reference": lambda: F.sparse_weight_grad_reference(x, dh1, W),
        "numba kernel": lambda: F.sparse_weight_grad_into(col_start, col_rows, dh1, gW)}
    flat = [(r(p.size), r(p.size), np.zeros(p.size, dtype)) for p in VAE(X_DIM, Z, H, seed=0, dtype=dtype).params.values()]
    lr, ep, prior = t(0.01), t(1e-8), t(2e-5)
    table["adagrad_update (795k parameters)"] = {
        "numpy reference": lambda: [F.adagrad_update_reference(p, g, s, lr, ep, prior, True) for p, g, s in flat],
        "numba kernel": lambda: [F.adagrad_update(p, g, s, lr, ep, prior, True) for p, g, s in flat]}
    return table


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
    worst = (0.0, "")
    for dtype in (np.float64, np.float32):
        for kernel, variants in cases(dtype).items():
            for fn in variants.values():
                fn()                                   # warm-up: compile, touch memory
            inner = 2 if kernel.startswith("adagrad") else 20
            t = bench(variants, rounds, inner)
            ref = np.median(t["numpy reference"])
            print(f"\n{kernel}  {np.dtype(dtype).name}   (microseconds per call)")
            for name, v in t.items():
                med = np.median(v)
                print(f"  {name:<20} median {med:9.1f}   p10-p90 {np.percentile(v, 10):9.1f}-{np.percentile(v, 90):9.1f}"
                      f"   ratio to reference {med / ref:5.2f}")
            ratio = np.median(t["numba kernel"]) / ref
            worst = max(worst, (ratio, f"{kernel} {np.dtype(dtype).name}"))
    print(f"\nslowest kernel/reference ratio: {worst[0]:.2f} ({worst[1]})")


if __name__ == "__main__":
    main()
