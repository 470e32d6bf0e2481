"""The sparse first layer for 0/1 minibatches: its kernels against the readable affine layer, the
fast steps with it against the same steps without it, its gradients against finite differences,
and training through the harness."""
import dataclasses

import numpy as np
import pytest

import npvae.fast
from npvae import VAE, Adagrad
from npvae import kernels as K
from npvae.fast import FastStep, FastWakeSleep
from npvae.gradcheck import check_elements
from npvae.train import train

from .test_train import params_of, toy_config, toy_data

TOL = {np.float64: 1e-12, np.float32: 1e-5}


def binary_batch(B, D, density, dtype, seed=0):
    """0/1 (B, D): row 1 empty, row 2 full, pixel 3 on and pixel 4 off in every other row."""
    x = (np.random.default_rng(seed).random((B, D)) < density).astype(dtype)
    x[:, 3], x[:, 4] = 1, 0
    x[1], x[2] = 0, 1
    return x


def indices(x):
    B, D = x.shape
    lists = (np.empty((B, D), np.int32), np.empty(B, np.int32), np.empty(D + 1, np.int32),
             np.empty(B * D, np.int32))
    n = K.active_indices(x, lists[0], lists[1])
    K.active_indices_by_column(*lists)
    return n, lists


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_active_indices_list_the_ones_by_row_and_by_pixel(dtype):
    x = binary_batch(9, 37, 0.3, dtype)
    n, (on_idx, on_count, col_start, col_rows) = indices(x)
    n_ref, by_row, by_col = K.active_indices_reference(x)
    assert n == n_ref == x.sum()
    assert on_count[1] == 0 and on_count[2] == 37
    assert all(np.array_equal(on_idx[b, :on_count[b]], by_row[b]) for b in range(9))
    assert col_start[0] == 0 and col_start[-1] == n
    assert all(np.array_equal(col_rows[col_start[d]:col_start[d + 1]], by_col[d]) for d in range(37))


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, np.nan])
def test_active_indices_reject_what_is_not_0_or_1(value):
    x = binary_batch(4, 10, 0.3, np.float64)
    x[3, 7] = value
    assert K.active_indices(x, np.empty((4, 10), np.int32), np.empty(4, np.int32)) == -1
    assert K.active_indices_reference(x)[0] == -1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("density", [0.0, 0.13, 0.5, 1.0])
def test_sparse_kernels_are_the_readable_affine_layer(dtype, density):
    """Forward x @ W + b and weight gradient x.T @ dh, against ``layers.affine_forward`` and
    ``affine_backward`` on the dense x (rows of 0..37 ones: every remainder of the four-row unroll)."""
    rng = np.random.default_rng(1)
    x = binary_batch(9, 37, density, dtype)
    W, b, dh = (rng.standard_normal(s).astype(dtype) for s in ((37, 11), (11,), (9, 11)))
    _, (on_idx, on_count, col_start, col_rows) = indices(x)
    out = np.full((9, 11), np.nan, dtype)
    gW = np.full((37, 11), np.nan, dtype)                 # every row must be written, the zero ones too
    K.sparse_affine_forward_into(on_idx, on_count, W, b, out)
    K.sparse_weight_grad_into(col_start, col_rows, dh, gW)
    rtol = TOL[dtype]
    expected = K.sparse_affine_forward_reference(x, W, b), K.sparse_weight_grad_reference(x, dh, W)
    for got, want in zip((out, gW), expected):
        assert got.dtype == want.dtype == dtype
        assert np.allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    assert np.array_equal(gW[4], dh[2]) and np.allclose(gW[3], dh.sum(axis=0) - dh[1], rtol=rtol, atol=rtol * 10)


def problem(dtype=np.float64, hidden=(7,), L=1, B=6, D=40, seed=0, density=0.2):
    vae = VAE(D, 3, hidden, seed=seed, init_std=0.4, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    x = (rng.random((B, D)) < density).astype(dtype)
    eps = rng.standard_normal((L, B, 3)).astype(dtype)
    return vae, x, eps


def test_the_sparse_path_runs_up_to_the_crossover_and_equals_the_reference_on_both_sides():
    vae, _, eps = problem()
    fast = FastStep(vae, Adagrad(), 6, 1, binary=True)
    assert fast.net.max_ones == int(npvae.fast.SPARSE_MAX_DENSITY * 6 * 40)
    x = np.zeros(6 * 40)
    x[np.random.default_rng(2).permutation(x.size)[:fast.net.max_ones + 1]] = 1
    at, above = x.copy(), x.copy()
    at[np.flatnonzero(x)[0]] = 0                          # exactly max_ones ones: sparse; one more: dense
    for batch, sparse in ((at, True), (above, False)):
        batch = batch.reshape(6, 40)
        loss, grads = vae.loss_and_grads(batch, eps)
        assert fast.loss_and_grads(batch, eps) == pytest.approx(loss, rel=1e-13)
        assert fast.net.sparse is sparse
        for k in grads:
            assert np.allclose(fast.grads[k], grads[k], rtol=1e-12, atol=1e-15), k


def test_grey_levels_and_the_flag_off_keep_the_dense_path():
    vae, x, eps = problem()
    grey = x * 0.5
    grey_step = FastStep(vae, Adagrad(), 6, 1, binary=True)
    loss, grads = vae.loss_and_grads(grey, eps)
    assert grey_step.loss_and_grads(grey, eps) == pytest.approx(loss, rel=1e-13) and not grey_step.net.sparse
    assert all(np.allclose(grey_step.grads[k], grads[k], rtol=1e-12, atol=1e-15) for k in grads)
    off = FastStep(vae, Adagrad(), 6, 1)
    off.loss_and_grads(x, eps)
    assert not off.binary and not off.net.sparse


@pytest.mark.parametrize("hidden,L", [((7,), 1), ((8, 5), 2)])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_sparse_fast_step_equals_the_dense_one(hidden, L, dtype, rtol):
    steps = {}
    for binary in (True, False):
        vae, _, _ = problem(dtype, hidden, L)
        steps[binary] = FastStep(vae, Adagrad(lr=0.05, warmup=1), 6, L, "weights", 1e-2, binary=binary,
                                 sparse_max_density=1.0)             # every 0/1 minibatch: the flag decides
    data = (np.random.default_rng(4).random((30, 40)) < 0.2).astype(dtype)
    rngs = {True: np.random.default_rng(5), False: np.random.default_rng(5)}
    for i in range(4):                                    # the warm-up call, then real steps
        losses = {}
        for binary, fast in steps.items():
            x, eps = fast.load_batch(data, np.arange(6 * i, 6 * i + 6), rngs[binary])
            losses[binary], finite = fast.step(x, eps, want_loss=True)
            assert finite and fast.net.sparse is binary
        assert losses[True] == pytest.approx(losses[False], rel=rtol)
    a, b = steps[True].vae.params, steps[False].vae.params
    for k in a:
        assert a[k].dtype == dtype and np.allclose(a[k], b[k], rtol=rtol, atol=rtol * 1e-3), k


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_sparse_fast_wake_sleep_equals_the_dense_one(dtype, rtol):
    steps = {}
    for sparse in (True, False):
        vae, _, _ = problem(dtype)
        opts = Adagrad(lr=0.05, warmup=1), Adagrad(lr=0.05, warmup=1)
        # 1.0: every data minibatch and every dream sparse; -1: none
        steps[sparse] = FastWakeSleep(vae, *opts, 6, "weights", 1e-2, binary=sparse,
                                      sparse_max_density=1.0 if sparse else -1.0)
    data = (np.random.default_rng(4).random((30, 40)) < 0.5).astype(dtype)       # grey: dynamic binarization
    rngs = {True: np.random.default_rng(5), False: np.random.default_rng(5)}
    for i in range(4):
        for sparse, ws in steps.items():
            assert ws.step(data, np.arange(6 * i, 6 * i + 6), rngs[sparse], dynamic=True)
            assert ws.net.sparse is sparse                                      # the sleep phase's dreams
    assert np.array_equal(steps[True].x_dream, steps[False].x_dream)
    a, b = steps[True].vae.params, steps[False].vae.params
    for k in a:
        assert a[k].dtype == dtype and np.allclose(a[k], b[k], rtol=rtol, atol=rtol * 1e-3), k


@pytest.mark.parametrize("L", [1, 3])
def test_sparse_fast_gradients_pass_finite_differences(L):
    """The sparse path's backward against central differences of its own loss, float64, every element."""
    vae, x, eps = problem(hidden=(7, 5), L=L, seed=3)
    x[1] = 0                                              # a datapoint with no pixel on
    vae.params["enc.logvar.b"][0] = -45.0                 # one logvar unit held by the clamp: gradient 0 there
    fast = FastStep(vae, Adagrad(), 6, L, binary=True)
    fast.loss_and_grads(x, eps)
    assert fast.net.sparse
    grads = {k: g.copy() for k, g in fast.grads.items()}
    rows = check_elements(lambda: fast.loss_and_grads(x, eps, want_loss=True), vae.params, grads)
    worst = max(rows, key=lambda r: r.rel_error)
    assert worst.rel_error < 1e-6, worst


@pytest.mark.parametrize("algorithm", ["aevb", "wakesleep"])
def test_training_with_the_sparse_path_gives_the_same_bounds(tmp_path, monkeypatch, algorithm):
    data = toy_data()                                     # dynamic binarization: data.binary
    assert data.binary
    runs = {}
    for label, density in (("sparse", 1.0), ("dense", -1.0)):
        monkeypatch.setattr(npvae.fast, "SPARSE_MAX_DENSITY", density)
        seen = []
        # FastStep's own network (the two-thread step, which a float64 run on two BLAS threads would
        # pick, runs two of them: tests/test_two_thread.py holds it to FastStep, sparse path included)
        cfg = toy_config(tmp_path / label, algorithm=algorithm, samples=2000, lr=0.02, step_threads=1)
        runs[label] = train(cfg, data=data, callback=lambda learner, st: seen.append(learner.fast.net.sparse),
                            log=lambda *_: None)
        assert len(seen) == 100 and set(seen) == {label == "sparse"}
    for which in ("train_elbo", "test_elbo"):
        assert runs["sparse"][which] == pytest.approx(runs["dense"][which], rel=1e-10), which
    a, b = params_of(str(tmp_path / "sparse" / "run")), params_of(str(tmp_path / "dense" / "run"))
    assert all(np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)
    grey = dataclasses.replace(data, dynamic=False, binary=None)          # grey levels: binary found False
    assert not grey.binary
    seen = []
    train(toy_config(tmp_path / "grey", algorithm=algorithm, samples=200), data=grey,
          callback=lambda learner, st: seen.append(learner.fast.binary), log=lambda *_: None)
    assert seen and not any(seen)
