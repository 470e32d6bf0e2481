"""The benchmarks run (CI runs their quick modes).  No speed is asserted here: speed targets
live in benchmarks/ and are read off their output, never in timed tests."""
import json
import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args):
    # One BLAS thread: these smoke runs check the pipeline, not the speed, and two threads on a
    # machine busy with other jobs spin (the quick step benchmark then took over 5 minutes).
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_step_quick_without_peers(tmp_path):
    # --no-jax too: with JAX installed on the machine, --no-torch alone would time the JAX rows
    out = run("bench_step.py", "--quick", "--no-torch", "--no-jax", "--json", str(tmp_path / "step.json"))
    assert "npvae / floor" in out and "seconds per million training samples" in out and "wake-sleep / AEVB" in out
    from npvae import blas
    two = blas.available()         # the two-thread step's row, where NumPy's BLAS thread count can be set
    # npvae's loss check (and the two-thread step's), once per dtype
    assert out.count("ok (tol") == (4 if two else 2) and "MISMATCH" not in out
    figures = json.load(open(tmp_path / "step.json"))
    for dtype in ("float64", "float32"):
        row = figures[dtype]
        assert row["npvae_ms"] > 0 and row["floor_ms"] > 0 and row["floor_update_ms"] > 0 and row["wakesleep_ms"] > 0
        assert (row["npvae_two_thread_ms"] > 0) if two else row["npvae_two_thread_ms"] is None
        for peer in ("torch_eager_ms", "torch_compile_ms", "torch_compile_fused_ms", "jax_jit_ms"):
            assert row[peer] is None, peer


def test_bench_kernels_quick():
    out = run("bench_kernels.py", "--quick")
    for kernel in ("bernoulli_kl_grads want_elbo=False", "bernoulli_kl_grads want_elbo=True", "add_bias_neg_abs",
                   "tanh_backward_inplace", "tanh_inplace", "heads_bias_clamp", "reparameterize_into", "reparameterize_backward_into",
                   "adagrad_update (795k parameters)"):
        assert f"{kernel}  float64" in out and f"{kernel}  float32" in out, kernel
    assert "slowest kernel/reference ratio" in out
    medians = [float(m) for m in re.findall(r"median\s+([-\d.]+)", out)]
    assert len(medians) >= 2 * 9 * 2 and all(math.isfinite(t) and t > 0 for t in medians)   # a time per variant


def test_bench_threads_quick():
    out = run("bench_threads.py", "--quick")
    for line in ("serial", "python thread", "numba parallel", "blas 2 threads", "2 python threads x half batch"):
        assert out.count(line) >= 2, line           # one row per dtype
    times = [float(m) for m in re.findall(r"([\d.]+)\s+\([\d.]+ x ", out)]                 # ms, (ratio x ...)
    assert len(times) >= 10 and all(math.isfinite(t) and t > 0 for t in times)


def test_bench_sweep_one_case():
    out = run("bench_sweep.py", "--case", "mnist/wakesleep/float32", "--rounds", "1", "--seconds", "0.3")
    assert "1 job x 2 threads" in out and "2 jobs x 1 thread" in out and "sparse first layer" in out
    rates = [int(r.replace(",", "")) for r in re.findall(r"thread[s]?\s+([\d,]+)/s", out)]
    assert len(rates) == 2 and min(rates) > 0                      # training samples per second, both layouts


def test_bench_mcem_quick_times_both_paths_at_both_batch_sizes():
    out = run("bench_mcem.py", "--quick")
    rows = re.findall(r"batch\s+(\d+):\s+fast\s+([\d.]+) ms .*readable\s+([\d.]+) ms .*readable / fast ([\d.]+)x", out)
    assert [int(r[0]) for r in rows] == [100, 1000], out
    assert all(float(v) > 0 for r in rows for v in r[1:]), rows


def test_bench_frey_quick_times_the_fused_and_the_readable_update(tmp_path):
    out = run("bench_frey.py", "--quick", "--json", str(tmp_path / "frey.json"))
    figures = json.load(open(tmp_path / "frey.json"))
    assert sorted(figures) == ["aevb/float32", "aevb/float64", "wakesleep/float32", "wakesleep/float64"]
    for row in figures.values():
        assert row["fused_ms"] > 0 and row["readable_ms"] > 0 and math.isfinite(row["readable_over_fused"])
    assert out.count("prior and Adagrad fused") == 4           # the fused rows took the fused update
