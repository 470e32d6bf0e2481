"""The Frey Face training step, with and without the fused prior + Adagrad update.

    python benchmarks/bench_frey.py             # about a minute
    python benchmarks/bench_frey.py --quick     # a few seconds

The fast steps are Bernoulli only, so a Frey Face run (Gaussian decoder, 560-200-Nz) takes the
readable step.  With --fast (the default) that step still fuses its last act, the weight prior
and the Adagrad update, into one Numba pass per tensor (``npvae.fast.fused_adagrad_update``,
bitwise the same arithmetic: tests/test_fast.py); with --fast=false it runs the readable
``learners.prior_grads`` and ``Adagrad.update``.  This times one whole step of the harness's own
learner (``npvae.learners``: gather, noise, forward, backward, prior, update) both ways, for AEVB
and wake-sleep, in one process with one BLAS thread (what a sweep's job uses), the two variants
interleaved round by round (this machine drifts 5-15% over minutes, so only the ratio measured
side by side means anything).  Data: grey levels in [0, 1) shaped like Frey Face (1,500 x 560).

Target: the fused update makes the float32 Frey Face step at least 1.1x faster for both learners.
Measured 2026-11-23, the machine otherwise idle, two runs: AEVB 1.20-1.22x, wake-sleep 1.13-1.18x
(float64: 1.21-1.29x and 1.18-1.23x); the README's Speed section has the table.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae.config import TrainConfig  # noqa: E402
from npvae.data import TrainingData  # noqa: E402
from npvae.learners import LEARNERS  # noqa: E402

D, H, Z, N = 560, 200, 5, 1_500


def stepper(algorithm, dtype, fast):
    """A function doing one training step of a fresh learner, and the learner's implementation."""
    rng = np.random.default_rng(0)
    x = rng.random((N, D)).astype(dtype)
    data = TrainingData(x, x, x[:100], None, (28, 20), False)
    cfg = TrainConfig(algorithm=algorithm, dataset="frey", nz=Z, hidden=(H,), dtype=dtype, warmup=0, fast=fast)
    learner = LEARNERS[algorithm](cfg, D, N, rng, binary=False)
    batches = [rng.choice(N, cfg.batch_size, replace=False) for _ in range(15)]
    count = [0]

    def step():
        assert learner.step(data, batches[count[0] % len(batches)], rng)
        count[0] += 1
    return step, learner.implementation


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter rounds (a smoke run)")
    ap.add_argument("--json", default=None, help="also write the medians here")
    args = ap.parse_args(argv)
    rounds, steps = (2, 10) if args.quick else (9, 60)
    load = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load:.2f}" +
          ("   -- other jobs are running: the numbers are not reliable" if load > 1.0 else ""))
    results = {}
    for algorithm in ("aevb", "wakesleep"):
        for dtype in ("float32", "float64"):
            variants = {"fused": stepper(algorithm, dtype, True), "readable": stepper(algorithm, dtype, False)}
            for step, _ in variants.values():
                for _ in range(5):                              # JIT, caches, first touch
                    step()
            times = {name: [] for name in variants}
            for _ in range(rounds):                             # interleaved: each round times both
                for name, (step, _) in variants.items():
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        step()
                    times[name].append((time.perf_counter() - t0) / steps * 1e3)
            med = {name: float(np.median(v)) for name, v in times.items()}
            ratio = med["readable"] / med["fused"]
            results[f"{algorithm}/{dtype}"] = {**{f"{k}_ms": v for k, v in med.items()}, "readable_over_fused": ratio}
            print(f"{algorithm:<9} {dtype}: fused {med['fused']:6.2f} ms/step ({100e3 / med['fused']:7,.0f} samples/s)"
                  f"   readable {med['readable']:6.2f} ms/step ({100e3 / med['readable']:7,.0f} samples/s)"
                  f"   readable / fused {ratio:.2f}x   [{variants['fused'][1]}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
