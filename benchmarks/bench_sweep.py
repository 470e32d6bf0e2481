"""Sweep throughput: training samples per second for the whole machine, 1 job x 2 BLAS threads
against 2 jobs x 1 thread, for each learner, dataset and precision of the Figure 2 sweep.

    python benchmarks/bench_sweep.py            # about 4 minutes
    python benchmarks/bench_sweep.py --quick    # under a minute

Each job is a fresh process (BLAS threads are fixed when NumPy loads) that builds the harness's
own learner (``npvae.learners``, fast step and sparse first layer where they apply) on synthetic
data shaped like the real set (MNIST: grey levels with mean 0.13, dynamically binarized; Frey
Face: grey levels in [0, 1)), warms up, then steps for a fixed time.  The two layouts are
interleaved round by round, since this machine drifts over minutes.  The table ends with the wall
time the full Figure 2 sweep needs at the best layout: 10 MNIST runs (Nz 3, 5, 10, 20, 200) and 8
Frey Face runs (Nz 2, 5, 10, 20), each to 1e8 samples, both learners, costed at Nz = 20 and 5.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHAPES = {"mnist": (784, 500, 20, 50_000), "frey": (560, 200, 5, 1_500)}
SWEEP_RUNS = {"mnist": 5, "frey": 4}            # Nz values per dataset; times 2 learners
BUDGET = 1e8


def worker(dataset, algorithm, dtype, seconds):
    """One job: steps of the real learner for `seconds`; prints samples/s as JSON."""
    import numpy as np
    sys.path.insert(0, ROOT)
    from npvae.config import TrainConfig
    from npvae.data import TrainingData
    from npvae.learners import LEARNERS
    D, H, Z, N = SHAPES[dataset]
    rng = np.random.default_rng(0)
    if dataset == "mnist":
        x = (rng.random((N, D)) * (rng.random(D) < 0.26)).astype(dtype)      # mean ~0.13, like MNIST
        data = TrainingData(x, x, x[:100], None, (28, 28), True)
    else:
        x = rng.random((N, D)).astype(dtype)
        data = TrainingData(x, x, x[:100], None, (28, 20), False)
    cfg = TrainConfig(algorithm=algorithm, dataset=dataset, nz=Z, hidden=(H,), dtype=dtype, warmup=0)
    learner = LEARNERS[algorithm](cfg, D, N, rng, binary=data.binary)
    perm, pos, M = rng.permutation(N), 0, cfg.batch_size

    def step():
        nonlocal perm, pos
        if pos + M > N:
            perm, pos = rng.permutation(N), 0
        learner.step(data, perm[pos:pos + M], rng)
        pos += M

    for _ in range(20):                                       # JIT, caches, first touch
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    print(json.dumps({"samples_per_s": n * M / (time.perf_counter() - t0), "impl": learner.implementation}))


def measure(dataset, algorithm, dtype, jobs, threads, seconds):
    """Whole-machine samples/s of `jobs` simultaneous jobs with `threads` BLAS threads each."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", dataset, algorithm, dtype, str(seconds)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed ({dataset} {algorithm} {dtype})")
    return sum(o["samples_per_s"] for o in outs), outs[0]["impl"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--case", action="append", default=None,
                    help="only this dataset/algorithm/dtype, e.g. mnist/aevb/float32 (repeatable)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    layouts = {"1 job x 2 threads": (1, 2), "2 jobs x 1 thread": (2, 1)}
    cases = [(d, a, t) for d in ("mnist", "frey") for a in ("aevb", "wakesleep") for t in ("float32", "float64")]
    if args.case:
        unknown = set(args.case) - {"/".join(c) for c in cases}
        if unknown:
            raise SystemExit(f"unknown case(s) {sorted(unknown)}: dataset/algorithm/dtype, e.g. mnist/aevb/float32")
        cases = [c for c in cases if "/".join(c) in args.case]
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}" +
          ("   -- other jobs are running: the numbers are not reliable" if os.getloadavg()[0] > 1.0 else ""))
    results = {}
    for case in cases:
        rates = {k: [] for k in layouts}
        impl = ""
        for _ in range(rounds):                               # interleaved: each round measures both layouts
            for name, (jobs, threads) in layouts.items():
                rate, impl = measure(*case, jobs, threads, seconds)
                rates[name].append(rate)
        med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        results["/".join(case)] = {**med, "implementation": impl}
        best = max(med, key=med.get)
        print(f"{case[0]:>5} {case[1]:<9} {case[2]}: " + "  ".join(f"{k} {v:8,.0f}/s" for k, v in med.items())
              + f"   best: {best} ({med[best] / min(med.values()):.2f}x)   [{impl}]")
    for dtype in ("float32", "float64"):
        if any(f"{d}/{a}/{dtype}" not in results for d in SWEEP_RUNS for a in ("aevb", "wakesleep")):
            continue                                           # --case left some out: no sweep estimate
        hours = 0.0
        for dataset, n_nz in SWEEP_RUNS.items():
            for alg in ("aevb", "wakesleep"):
                rate = max(v for k, v in results[f"{dataset}/{alg}/{dtype}"].items() if k in layouts)
                hours += n_nz * BUDGET / rate / 3600
        print(f"full Figure 2 sweep (18 runs x 1e8 samples) in {dtype} at the best layout: {hours:.0f} hours "
              f"of wall time on this machine")
        results[f"sweep_hours_{dtype}"] = hours
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        sys.exit(main())
