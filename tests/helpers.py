"""Shared test utilities: finite-difference comparison of a backward pass; running a sweep script."""
import csv
import os
import subprocess
import sys

import numpy as np

from npvae.gradcheck import numerical_gradient, relative_error

TOL = 1e-6


def check_backward(forward, backward, inputs, rng, wrt=None, h=1e-6, tol=TOL):
    """Compare backward(dout, cache) with central differences of f = sum(forward(*inputs)[0] * dout).

    inputs: list of float64 arrays; wrt: indices of the inputs whose gradients backward returns
    (in order).  Returns the list of relative errors.
    """
    out, cache = forward(*inputs)
    dout = rng.standard_normal(np.shape(out))
    analytic = backward(dout, cache)
    if not isinstance(analytic, tuple):
        analytic = (analytic,)
    wrt = list(range(len(inputs))) if wrt is None else wrt
    errors = []
    for k, a in zip(wrt, analytic):
        x = inputs[k]

        def f():
            return float(np.sum(forward(*inputs)[0] * dout))

        n = numerical_gradient(f, x, h)
        assert a.shape == x.shape, (a.shape, x.shape)
        err = relative_error(a, n)
        assert err <= tol, f"input {k}: relative error {err:.2e}"
        errors.append(err)
    return errors


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_sweep_script(script, out, *args, table=None):
    """Run ``examples/<script> --jobs=2 --out=<out> <args>`` (e.g. "--smoke"), assert it exited 0,
    and return (its stdout, the rows of <out>/<table>.csv when a table is named)."""
    cmd = [sys.executable, os.path.join(ROOT, "examples", script), "--jobs=2", f"--out={out}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(os.path.join(out, table + ".csv")))) if table else None
    return proc.stdout, rows
