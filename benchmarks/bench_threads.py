"""Why npvae's fast step is serial: the threaded alternatives, measured against it.

    python benchmarks/bench_threads.py            # ~1 minute
    python benchmarks/bench_threads.py --quick    # ~20 seconds

1. The prior + Adagrad pass over the paper's 795k parameters (float64 and float32), each call
   timed right after a two-threaded matrix product, as in the step, where OpenBLAS's worker
   thread then spins for a while before it sleeps:

     serial          npvae.kernels.adagrad_update, what FastStep runs
     python thread   half on a persistent worker thread (a nogil Numba loop), half on the caller
     numba parallel  the same loop under prange, two chunks (Numba's threading layer)

2. The step's five big matrix products (M = 100, float64 and float32): OpenBLAS with 2 threads,
   against two Python threads that each run them on half the minibatch with 1-threaded BLAS
   (each configuration in its own subprocess, since OpenBLAS reads its thread count at load).

Medians over interleaved rounds.  The threaded variants only pay when they beat "serial" and
"blas 2 threads"; on the 2-core machine this was written on, none did.
"""
import argparse
import math
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import VAE  # noqa: E402
from npvae.kernels import adagrad_update  # noqa: E402

X_DIM, H, Z, M = 784, 500, 20, 100


@njit(nogil=True, cache=True, error_model="numpy")
def adagrad_range(p, g, sum_sq, lr, eps, prior_scale, lo, hi):
    """adagrad_update on p[lo:hi], releasing the GIL (for the worker-thread variant)."""
    for i in range(lo, hi):
        gi = g[i] + prior_scale * p[i]
        s = sum_sq[i] + gi * gi
        sum_sq[i] = s
        p[i] -= lr * gi / math.sqrt(s + eps)


@njit(parallel=True, cache=True, error_model="numpy")
def adagrad_parallel(p, g, sum_sq, lr, eps, prior_scale):
    n = p.size
    for chunk in prange(2):
        for i in range(chunk * n // 2, (chunk + 1) * n // 2):
            gi = g[i] + prior_scale * p[i]
            s = sum_sq[i] + gi * gi
            sum_sq[i] = s
            p[i] -= lr * gi / math.sqrt(s + eps)


class WorkerThread:
    """A persistent thread that runs the second half of each tensor's update."""

    def __init__(self):
        self.go, self.done, self.job = threading.Event(), threading.Event(), None
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            self.go.wait()
            self.go.clear()
            for args in self.job:
                adagrad_range(*args)
            self.done.set()

    def run(self, first_halves, second_halves):
        self.job = second_halves
        self.go.set()
        for args in first_halves:
            adagrad_range(*args)
        self.done.wait()
        self.done.clear()


def update_variants(dtype):
    rng = np.random.default_rng(0)
    t = np.dtype(dtype).type
    lr, eps, prior = t(0.01), t(1e-8), t(2e-5)
    tensors = []
    for p in VAE(X_DIM, Z, H, seed=0, dtype=dtype).params.values():
        n = p.size
        tensors.append((rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype),
                        np.zeros(n, dtype)))
    worker = WorkerThread()
    first = [(p, g, s, lr, eps, prior, 0, p.size // 2) for p, g, s in tensors]
    second = [(p, g, s, lr, eps, prior, p.size // 2, p.size) for p, g, s in tensors]

    def serial():
        for p, g, s in tensors:
            adagrad_update(p, g, s, lr, eps, prior, True)

    def python_thread():
        worker.run(first, second)

    def numba_parallel():
        for p, g, s in tensors:
            adagrad_parallel(p, g, s, lr, eps, prior)

    return {"serial": serial, "python thread": python_thread, "numba parallel": numba_parallel}


def time_after_product(variants, dtype, rounds, per_round):
    rng = np.random.default_rng(1)
    a, w = rng.standard_normal((M, X_DIM)).astype(dtype), rng.standard_normal((X_DIM, H)).astype(dtype)
    out = np.empty((M, H), dtype)
    times = {k: [] for k in variants}
    for f in variants.values():
        f()                                        # compile, first touch
    for _ in range(rounds):
        for name, f in variants.items():
            for _ in range(per_round):
                np.matmul(a, w, out=out)           # OpenBLAS's worker is now awake and spinning
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


# --------------------------------------------------------------------------- products, in a subprocess

def products_child(mode, dtype_name, steps):
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(0)
    W1, Wo = rng.standard_normal((X_DIM, H)).astype(dtype), rng.standard_normal((H, X_DIM)).astype(dtype)

    def buffers(rows):
        r = lambda *s: rng.standard_normal(s).astype(dtype)      # noqa: E731
        return dict(x=r(rows, X_DIM), h=r(rows, H), lo=r(rows, X_DIM), hd=r(rows, H), dlo=r(rows, X_DIM),
                    dhd=r(rows, H), dh=r(rows, H), gWo=r(H, X_DIM), gW1=r(X_DIM, H))

    def big5(b):
        np.matmul(b["x"], W1, out=b["h"])
        np.matmul(b["hd"], Wo, out=b["lo"])
        np.matmul(b["hd"].T, b["dlo"], out=b["gWo"])
        np.matmul(b["dlo"], Wo.T, out=b["dhd"])
        np.matmul(b["x"].T, b["dh"], out=b["gW1"])

    if mode == "blas2":
        b = buffers(M)
        for _ in range(10):
            big5(b)
        t0 = time.perf_counter()
        for _ in range(steps):
            big5(b)
    else:                                          # two threads, half the minibatch each, no per-step sync
        halves = [buffers(M // 2), buffers(M // 2)]
        for b in halves:
            big5(b)
        start = threading.Barrier(3)

        def work(b):
            start.wait()
            for _ in range(steps):
                big5(b)
        threads = [threading.Thread(target=work, args=(b,)) for b in halves]
        for th in threads:
            th.start()
        start.wait()
        t0 = time.perf_counter()
        for th in threads:
            th.join()
    print(1e3 * (time.perf_counter() - t0) / steps)


def products(dtype_name, rounds, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--products-child"]
    times = {"blas 2 threads": [], "2 python threads x half batch, blas 1 thread": []}
    for _ in range(rounds):
        for label, mode, threads in (("blas 2 threads", "blas2", "2"),
                                     ("2 python threads x half batch, blas 1 thread", "split", "1")):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
            out = subprocess.run(cmd + [mode, dtype_name, str(steps)], env=env, capture_output=True, text=True,
                                 check=True).stdout
            times[label].append(float(out.split()[-1]))
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--products-child", nargs=3, metavar=("MODE", "DTYPE", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.products_child:
        mode, dtype_name, steps = args.products_child
        products_child(mode, dtype_name, int(steps))
        return 0
    rounds, per_round, steps = (3, 10, 40) if args.quick else (8, 25, 150)
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        upd = time_after_product(update_variants(dtype), dtype, rounds, per_round)
        print(f"\n{name}: prior + Adagrad over 795k parameters, right after a 2-thread product (ms, median)")
        for k, v in upd.items():
            print(f"  {k:<16} {v:7.3f}   ({v / upd['serial']:.2f} x serial)")
        prod = products(name, max(2, rounds // 2), steps)
        base = prod["blas 2 threads"]
        print(f"{name}: the five big products of a step (ms per step, median)")
        for k, v in prod.items():
            print(f"  {k:<46} {v:7.3f}   ({v / base:.2f} x blas 2 threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
