"""The sparse first layer for 0/1 minibatches against the dense products: where it pays, and what it saves.

    python benchmarks/bench_sparse.py                 # both parts, 1 and 2 BLAS threads: a few minutes
    python benchmarks/bench_sparse.py --quick         # two densities, few rounds: about a minute
    python benchmarks/bench_sparse.py --part=crossover --threads=1

1. crossover.  The first encoder layer of the paper's MNIST model, x (100, 784) 0/1 with a given
   fraction of ones, W (784, 500), float64 and float32:

     dense    np.matmul(x, W, out=) + bias, and np.matmul(x.T, dh, out=): what FastStep does otherwise
     sparse   active_indices + active_indices_by_column + sparse_affine_forward_into
              + sparse_weight_grad_into (npvae.kernels): the index lists are built once per minibatch
              and serve both products

   and the forward alone (dense product + bias against active_indices + sparse_affine_forward_into:
   wake-sleep's wake phase runs only the encoder's forward on the data).  The crossover is where
   sparse / dense = 1, interpolated linearly in the density between the two measured densities
   around it.  npvae.fast.SPARSE_MAX_DENSITY is set from it (its comment gives the figures).

2. step.  npvae.fast.FastStep and FastWakeSleep with the sparse path and without it (binary=False,
   and for wake-sleep's dreams sparse_max_density=-1) on random 0/1 data with 13% ones (MNIST's
   mean pixel; M = 100, the paper's 784-500-20 model, Adagrad with the prior, no warm-up).  The
   wake-sleep model's output bias is set to logit(0.13), so that its dreams have MNIST's density as
   a trained model's do (an untrained one dreams half the pixels on, where the dense path runs).

Each BLAS thread count runs in its own subprocess (OpenBLAS reads it at load).  Within one, the
variants are interleaved in rounds (this machine drifts 5-15% over minutes): only ratios measured
side by side mean anything.  Medians, with p10-p90 in brackets.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

X_DIM, H, Z, M, N = 784, 500, 20, 100, 10_000
DENSITIES = (0.05, 0.10, 0.13, 0.20, 0.25, 0.30, 0.40, 0.50)
QUICK_DENSITIES = (0.13, 0.50)
STEP_DENSITY = 0.13


def first_layer_variants(dtype, density, seed=0):
    """{variant: fn} for one dtype and density: dense / sparse, forward + weight gradient and forward alone."""
    from npvae.kernels import (active_indices, active_indices_by_column, sparse_affine_forward_into,
                               sparse_weight_grad_into)
    rng = np.random.default_rng(seed)
    x = (rng.random((M, X_DIM)) < density).astype(dtype)
    W, b = (0.01 * rng.standard_normal((X_DIM, H))).astype(dtype), rng.standard_normal(H).astype(dtype)
    dh = rng.standard_normal((M, H)).astype(dtype)
    h, gW = np.empty((M, H), dtype), np.empty((X_DIM, H), dtype)
    on_idx, on_count = np.empty((M, X_DIM), np.int32), np.empty(M, np.int32)
    col_start, col_rows = np.empty(X_DIM + 1, np.int32), np.empty(M * X_DIM, np.int32)

    def dense_forward():
        np.matmul(x, W, out=h)
        np.add(h, b, out=h)

    def dense_both():
        dense_forward()
        np.matmul(x.T, dh, out=gW)

    def sparse_forward():
        active_indices(x, on_idx, on_count)
        sparse_affine_forward_into(on_idx, on_count, W, b, h)

    def sparse_both():
        sparse_forward()
        active_indices_by_column(on_idx, on_count, col_start, col_rows)
        sparse_weight_grad_into(col_start, col_rows, dh, gW)

    # the two paths must compute the same thing before either is timed
    dense_both()
    h_dense, g_dense = h.copy(), gW.copy()
    sparse_both()
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert np.allclose(h, h_dense, rtol=tol, atol=tol) and np.allclose(gW, g_dense, rtol=tol, atol=tol)
    return {"dense fwd+grad": dense_both, "sparse fwd+grad": sparse_both,
            "dense fwd": dense_forward, "sparse fwd": sparse_forward}


def time_interleaved(variants, rounds, inner):
    """{name: fn} -> {name: ms per call, one per round}; every round times every variant once."""
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t) / inner * 1e3)
    return times


def crossover(densities, ratios):
    """Where sparse / dense crosses 1, as text: a density interpolated linearly between the two
    measured points around it, or which side of the measured range it lies on."""
    if ratios[0] > 1.0:
        return f"below {densities[0]} (sparse slower at every measured density)"
    for (d0, r0), (d1, r1) in zip(zip(densities, ratios), zip(densities[1:], ratios[1:])):
        if r0 <= 1.0 < r1:
            return f"{d0 + (1.0 - r0) * (d1 - d0) / (r1 - r0):.3f}"
    return f"above {densities[-1]} (sparse faster at every measured density)"


def run_crossover(densities, rounds):
    out = {}
    for dtype in (np.float64, np.float32):
        variants = {}
        for dens in densities:                   # every density in every round: drift hits them all alike
            for name, fn in first_layer_variants(dtype, dens).items():
                variants[(dens, name)] = fn
        for fn in variants.values():
            fn()
        t = time_interleaved(variants, rounds, inner=5)
        out[np.dtype(dtype).name] = {f"{d} {name}": v for (d, name), v in t.items()}
    return out


def step_variants(dtype):
    """FastStep and FastWakeSleep with the sparse path and without it, on the same binary data."""
    from npvae import VAE, Adagrad
    from npvae.fast import FastStep, FastWakeSleep
    data = (np.random.default_rng(0).random((N, X_DIM)) < STEP_DENSITY).astype(dtype)
    variants = {}
    for label, sparse in (("sparse", True), ("dense", False)):
        vae = VAE(X_DIM, Z, H, seed=0, dtype=dtype)
        fast = FastStep(vae, Adagrad(0.01, warmup=0), M, 1, "weights", 1.0 / N, binary=sparse)
        order, rng = np.random.default_rng(1), np.random.default_rng(2)

        def aevb(fast=fast, order=order, rng=rng):
            x, eps = fast.load_batch(data, order.integers(0, N, M), rng)
            fast.step(x, eps)
        aevb.net = fast.net
        variants[f"FastStep {label}"] = aevb

        vae = VAE(X_DIM, Z, H, seed=0, dtype=dtype)
        vae.params["dec.logits.b"][:] = np.log(STEP_DENSITY / (1 - STEP_DENSITY))    # dreams with MNIST's density
        ws = FastWakeSleep(vae, Adagrad(0.01, warmup=0), Adagrad(0.01, warmup=0), M, "weights", 1.0 / N,
                           binary=sparse, sparse_max_density=None if sparse else -1.0)
        order, rng = np.random.default_rng(1), np.random.default_rng(2)

        def wakesleep(ws=ws, order=order, rng=rng):
            ws.step(data, order.integers(0, N, M), rng)
        wakesleep.net = ws.net
        variants[f"FastWakeSleep {label}"] = wakesleep
    return variants


def run_step(rounds):
    out = {}
    for dtype in (np.float64, np.float32):
        variants = step_variants(dtype)
        for name, fn in variants.items():
            for _ in range(5):
                fn()                                    # compile, first touch
            # the last minibatch (for wake-sleep: the last dreams) took the path the name says
            assert fn.net.sparse == name.endswith("sparse"), name
        out[np.dtype(dtype).name] = time_interleaved(variants, rounds, inner=10)
    return out


def worker(args):
    densities = QUICK_DENSITIES if args.quick else DENSITIES
    result = {}
    if args.part in ("both", "crossover"):
        result["crossover"] = run_crossover(densities, args.rounds or (3 if args.quick else 25))
    if args.part in ("both", "step"):
        result["step"] = run_step(args.rounds or (2 if args.quick else 20))
    json.dump({"densities": densities, **result}, sys.stdout)


def fmt(v):
    return f"{np.median(v):7.3f} ({np.percentile(v, 10):.2f}-{np.percentile(v, 90):.2f})"


def report(threads, res):
    print(f"\n===== OPENBLAS_NUM_THREADS={threads}")
    densities = res["densities"]
    if "crossover" in res:
        for dtype, t in res["crossover"].items():
            print(f"\n{dtype}: first layer, ms per call, median (p10-p90) over {len(next(iter(t.values())))} rounds")
            print(f"  {'density':>7}  {'dense fwd+grad':>21}  {'sparse fwd+grad':>21}  ratio  "
                  f"{'dense fwd':>21}  {'sparse fwd':>21}  ratio")
            ratios = {"fwd+grad": [], "fwd": []}
            for d in densities:
                row = f"  {d:7.2f}"
                for part in ("fwd+grad", "fwd"):
                    dense, sparse = t[f"{d} dense {part}"], t[f"{d} sparse {part}"]
                    ratio = float(np.median(sparse) / np.median(dense))
                    ratios[part].append(ratio)
                    row += f"  {fmt(dense):>21}  {fmt(sparse):>21}  {ratio:5.2f}"
                print(row)
            for part, r in ratios.items():
                print(f"  crossover ({part}): sparse / dense = 1 at density {crossover(list(densities), r)}")
    if "step" in res:
        for dtype, t in res["step"].items():
            print(f"\n{dtype}: one training step on 0/1 data with {STEP_DENSITY:.0%} ones, ms, median (p10-p90)"
                  f" over {len(next(iter(t.values())))} rounds of 10 steps")
            for name, v in t.items():
                print(f"  {name:<22} {fmt(v)}")
            for algo in ("FastStep", "FastWakeSleep"):
                s, d = np.median(t[f"{algo} sparse"]), np.median(t[f"{algo} dense"])
                print(f"  {algo}: sparse / dense = {s / d:.3f}  ({d - s:+.2f} ms per step saved)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two densities, few rounds")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--part", choices=("both", "crossover", "step"), default="both")
    p.add_argument("--threads", default="1,2", help="BLAS thread counts, a comma list (default 1,2)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    for threads in args.threads.split(","):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--part={args.part}"]
        cmd += ["--quick"] if args.quick else []
        cmd += [f"--rounds={args.rounds}"] if args.rounds else []
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        report(threads, json.loads(proc.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
