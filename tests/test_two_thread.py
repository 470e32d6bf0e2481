"""TwoThreadStep: FastStep's step on two threads (the minibatch's halves side by side, then the
update shared) equals FastStep to rounding, is bitwise reproducible, and runs through the harness."""
import dataclasses

import numpy as np
import pytest

from npvae import VAE, Adagrad, Adam, blas
from npvae.fast import FastStep, TwoThreadStep, _Worker, two_thread_reason
from npvae.learners import AEVB
from npvae.train import TrainConfig, train

from .test_train import params_of, toy_data

pytestmark = pytest.mark.skipif(not blas.available(), reason="NumPy's BLAS thread count cannot be set here")


def pair(dtype=np.float64, hidden=(9, 7), seed=0):
    return [VAE(13, 3, hidden, seed=seed, init_std=0.4, dtype=dtype) for _ in range(2)]


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 1e-4)])
@pytest.mark.parametrize("binary,M,kl_weight", [(True, 8, 1.0), (False, 7, 0.3)])
def test_two_thread_steps_equal_fast_steps(dtype, rtol, binary, M, kl_weight):
    """Ten steps each, from the same parameters, on the same minibatches, binarization and noise
    (the sparse first layer on 0/1 data; grey levels, an odd minibatch and a KL weight otherwise)."""
    rng = np.random.default_rng(1)
    grey = rng.random((50, 13)).astype(dtype)
    data = (grey > 0.6).astype(dtype) if binary else grey
    a, b = pair(dtype)
    serial = FastStep(a, Adagrad(lr=0.05, warmup=2), M, 1, "weights", 0.02, binary=binary, sparse_max_density=1.0)
    two = TwoThreadStep(b, Adagrad(lr=0.05, warmup=2), M, "weights", 0.02, binary=binary, sparse_max_density=1.0)
    serial.kl_weight = two.kl_weight = kl_weight
    for step in range(10):
        idx = np.random.default_rng(step).integers(0, 50, M)
        xa, ea = serial.load_batch(data, idx, np.random.default_rng(100 + step))
        xb, eb = two.load_batch(data, idx, np.random.default_rng(100 + step))
        assert np.array_equal(xa, xb) and np.array_equal(ea, eb)        # the same draws
        la, fa = serial.step(xa, ea, want_loss=True)
        lb, fb = two.step(xb, eb, want_loss=True)
        assert fa and fb and lb == pytest.approx(la, rel=rtol)
    assert serial.opt.t == two.opt.t == 10
    for k in a.params:
        assert b.params[k].dtype == dtype
        np.testing.assert_allclose(b.params[k], a.params[k], rtol=rtol, atol=rtol * np.abs(a.params[k]).max(),
                                   err_msg=k)
    two.close()


def test_the_halves_are_parts_without_minibatch_noise_or_update_of_their_own():
    """The halves are handed rows of the whole step's x and eps and the whole step applies their
    summed gradients, so they allocate none of those; a FastStep alone still has all three."""
    vae = VAE(13, 3, (9,), seed=0)
    two = TwoThreadStep(vae, Adagrad(), 6)
    x, eps = two.load_batch(np.ones((20, 13)), np.arange(6), np.random.default_rng(0))
    two.step(x, eps)
    for h in two.halves:
        assert h.update_rule is None and h.eps is None and h.eps64 is None
        assert h.x is None and h.net.x is None and h.net.uniform is None and h.net.is_on is None
    # what the halves' update rules held was only references: the optimizer state is one set, the whole step's
    assert set(two.opt.state["sum_sq"]) == set(vae.params)
    alone = FastStep(VAE(13, 3, (9,), seed=0), Adagrad(), 6)
    assert alone.update_rule is not None and alone.eps.shape == (1, 6, 3) and alone.x.shape == (6, 13)
    two.close()


def test_two_thread_gradients_are_the_whole_minibatchs():
    a, b = pair()
    rng = np.random.default_rng(2)
    x, eps = (rng.random((6, 13)) < 0.4).astype(float), rng.standard_normal((1, 6, 3))
    loss, grads = a.loss_and_grads(x, eps, "B")
    two = TwoThreadStep(b, Adagrad(), 6)
    assert two.loss_and_grads(x, eps) == pytest.approx(loss, rel=1e-13)
    for k in grads:
        np.testing.assert_allclose(two.grads[k], grads[k], rtol=1e-12, atol=1e-15, err_msg=k)
    two.close()


def test_two_thread_step_is_bitwise_reproducible_and_restores_the_blas_threads():
    results = []
    with blas.threads(2):              # whatever the environment set, so that the restore is tested
        _reproducible_runs(results)
    assert all(np.array_equal(results[0][k], results[1][k]) for k in results[0])


def _reproducible_runs(results):
    before = blas.get_threads()
    assert before == 2
    for _ in range(2):
        vae = VAE(13, 3, (9,), seed=0, init_std=0.4)
        two = TwoThreadStep(vae, Adagrad(lr=0.05, warmup=0), 10, binary=True)
        data = (np.random.default_rng(3).random((40, 13)) < 0.3).astype(float)
        batches = np.random.default_rng(4)
        for _ in range(15):
            x, eps = two.load_batch(data, batches.integers(0, 40, 10), batches)
            two.step(x, eps)
        results.append({k: v.copy() for k, v in vae.params.items()})
        def fail(*args):
            raise FloatingPointError("the helper's half failed")
        two.halves[1]._forward_backward = fail       # a half fails inside the step: the count is restored too
        with pytest.raises(FloatingPointError, match="helper's half"):
            two.step(x, eps)
        assert blas.get_threads() == before
        two.close()
        with pytest.raises(RuntimeError, match="closed"):
            two.step(x, eps)


def test_a_dropped_step_frees_its_helper_thread():
    import gc
    import weakref
    two = TwoThreadStep(VAE(13, 3, (9,), seed=0), Adagrad(), 6)
    x, eps = two.load_batch(np.ones((20, 13)), np.arange(6), np.random.default_rng(0))
    two.step(x, eps)
    thread, alive = two.worker._thread, weakref.ref(two)
    assert thread.is_alive()
    del two, x, eps
    gc.collect()
    assert alive() is None                # nothing (the helper's last job included) holds the step
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_ctrl_c_in_the_callers_half_waits_for_the_helper():
    """A KeyboardInterrupt on the caller's thread propagates only after the helper's half is done
    (the two write shared buffers), and the worker serves the next call normally."""
    import time
    worker = _Worker()
    done = []

    def slow():
        time.sleep(0.3)
        done.append("helper")

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        worker.run(slow, interrupted)
    assert done == ["helper"]
    worker.run(lambda: done.append("next"), lambda: None)
    assert done == ["helper", "next"]
    worker.close()


def test_the_helper_thread_reraises_and_stops():
    worker = _Worker()
    ran = []

    def fail():
        raise ZeroDivisionError("in the helper")
    with pytest.raises(ZeroDivisionError, match="in the helper"):
        worker.run(fail, lambda: ran.append("here"))
    assert ran == ["here"]
    worker.run(lambda: ran.append("again"), lambda: None)         # still serving
    assert ran == ["here", "again"]
    worker.close()
    worker._thread.join(timeout=5)
    assert not worker._thread.is_alive()


def test_what_the_two_thread_step_does_not_implement():
    vae = VAE(13, 3, (9,), seed=0)
    assert two_thread_reason(vae, Adagrad(), 10) == ""
    assert "L = 2" in two_thread_reason(vae, Adagrad(), 10, L=2)
    assert "Adam" in two_thread_reason(vae, Adam(), 10)
    assert "one datapoint" in two_thread_reason(vae, Adagrad(), 1)
    with pytest.raises(ValueError, match="TwoThreadStep does not implement"):
        TwoThreadStep(vae, Adam(), 10)
    config = TrainConfig(nz=3, hidden=(9,), step_threads=2, optimizer="adam")
    learner = AEVB(config, 13, 100, np.random.default_rng(0))
    assert type(learner.fast) is FastStep and "does not implement optimizer Adam" in learner.implementation


@pytest.mark.parametrize("step_threads,expected", [(1, FastStep), (2, TwoThreadStep)])
def test_the_harness_picks_the_step_by_step_threads(step_threads, expected):
    learner = AEVB(TrainConfig(nz=3, hidden=(9,), step_threads=step_threads), 13, 100, np.random.default_rng(0),
                   binary=True)
    assert type(learner.fast) is expected
    for threads, automatic in ((2, TwoThreadStep), (1, FastStep)):     # float64: two threads only on two BLAS threads
        with blas.threads(threads):
            assert type(AEVB(TrainConfig(nz=3, hidden=(9,)), 13, 100, np.random.default_rng(0)).fast) is automatic
    single = AEVB(TrainConfig(nz=3, hidden=(9,), dtype="float32"), 13, 100, np.random.default_rng(0))
    assert type(single.fast) is FastStep           # float32: the serial step unless asked


def test_an_automatic_choice_is_kept_on_resume(tmp_path):
    """--step_threads=0 picks the step by the machine (two threads for float64 with two BLAS
    threads); a resume continues with the step the checkpoint was written by, whatever the machine
    says then, so that it stays bitwise the uninterrupted run."""
    data = toy_data()
    base = TrainConfig(nz=2, hidden=(8,), samples=2000, batch_size=20, checkpoint_seconds=1e9, progress=False,
                       figures=False, warmup=2, out=str(tmp_path / "a"))
    with blas.threads(2):
        full = train(base, data=data, log=lambda *_: None)
        part = dataclasses.replace(base, out=str(tmp_path / "b"))
        train(part, data=data, callback=lambda learner, st: st.steps == 41, log=lambda *_: None)
    with blas.threads(1):                            # the resumed process would choose one thread
        logs = []
        train(part, resume=True, data=data, log=logs.append)
    assert full["status"] == "finished"
    a, b = params_of(base.out), params_of(part.out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with np.load(f"{part.out}/checkpoint.npz") as z:
        assert int(z["aevb/step_threads"]) == 2


def test_a_two_thread_run_resumes_bitwise(tmp_path):
    data = toy_data()
    base = dict(nz=2, hidden=(8,), samples=3000, batch_size=20, checkpoint_seconds=1e9, progress=False,
                figures=False, warmup=2, step_threads=2)
    full = TrainConfig(**base, out=str(tmp_path / "a"))
    train(full, data=data, log=lambda *_: None)
    part = dataclasses.replace(full, out=str(tmp_path / "b"))
    train(part, data=data, callback=lambda learner, st: st.steps == 61, log=lambda *_: None)
    train(part, resume=True, data=data, log=lambda *_: None)
    a, b = params_of(full.out), params_of(part.out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
