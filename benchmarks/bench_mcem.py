"""One Monte Carlo EM step, the fast path against the readable one, timed side by side.

    python benchmarks/bench_mcem.py            # minibatch 100 and full batch 1000: about a minute
    python benchmarks/bench_mcem.py --quick    # a few rounds (CI)

The Figure 3 model (784-100-3, Bernoulli decoder, float32, Adagrad with the weight prior) on
random 0/1 data with 13% ones (MNIST's mean pixel).  One step of ``npvae.learners.MCEM``: an HMC
transition of 10 leapfrog steps for every chain in the batch, then 5 Adagrad M-steps of the
decoder.  Two learners built alike, one with ``fast=True`` (``FastDecoderJoint``: the HMC target
and the M-steps on preallocated buffers, the prior and Adagrad fused) and one with ``fast=False``
(the readable ``wake_loss_and_grads`` and ``make_log_joint``), step on the same batch in
interleaved rounds (this machine drifts 5-15% over minutes: only ratios measured side by side mean
anything).  tests/test_mcem.py holds the two paths equal to rounding; this only times them.

Run it on an otherwise idle machine with OPENBLAS_NUM_THREADS=1 (a sweep's jobs run one thread
each).  Medians, with p10-p90 in brackets.
"""
import argparse
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_sparse import time_interleaved  # noqa: E402

X_DIM, DENSITY = 784, 0.13


def mcem_learners(batch, n_train, seed=0):
    """{"fast": MCEM, "readable": MCEM} for Figure 3's model, built from the same seed, and the data
    (an object with train_x and dynamic, as ``MCEM.step`` reads it)."""
    from npvae.config import TrainConfig
    from npvae.learners import MCEM
    x = (np.random.default_rng(seed).random((n_train, X_DIM)) < DENSITY).astype(np.float32)
    data = types.SimpleNamespace(train_x=x, dynamic=False)
    learners = {}
    for name, fast in (("fast", True), ("readable", False)):
        config = TrainConfig(algorithm="mcem", metric="marginal", nz=3, hidden=(100,), batch_size=batch,
                             n_train=n_train, dtype="float32", lr=0.1, fast=fast, seed=seed)
        learners[name] = MCEM(config, X_DIM, n_train, np.random.default_rng(seed), binary=True)
    assert learners["fast"].fast is not None and learners["readable"].fast is None
    return learners, data


def step_variants(batch, n_train):
    learners, data = mcem_learners(batch, n_train)
    idx = np.arange(batch)
    rngs = {name: np.random.default_rng(1) for name in learners}

    def stepper(name):
        def step():
            assert learners[name].step(data, idx, rngs[name])
        return step
    return {name: stepper(name) for name in learners}


def summary(ms):
    p10, p50, p90 = np.percentile(ms, [10, 50, 90])
    return f"{p50:8.2f} ms  ({p10:.2f}-{p90:.2f})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few rounds (CI)")
    args = p.parse_args(argv)
    rounds = 3 if args.quick else 30
    print(f"MCEM step, Figure 3's model (784-100-3, float32), 0/1 data with {DENSITY:.0%} ones, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; {rounds} interleaved rounds")
    for batch, n_train in ((100, 1000), (1000, 1000)):
        variants = step_variants(batch, n_train)
        for fn in variants.values():                 # compile the numba kernels, warm the caches
            fn()
        times = time_interleaved(variants, rounds, inner=2 if batch > 100 else 5)
        ratio = np.median(np.array(times["readable"]) / np.array(times["fast"]))
        print(f"batch {batch:5d}:  fast {summary(times['fast'])}   readable {summary(times['readable'])}   "
              f"readable / fast {ratio:.2f}x (median of the rounds' ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
