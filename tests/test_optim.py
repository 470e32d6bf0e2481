import numpy as np
import pytest

from npvae.optim import SGD, Adagrad, Adam, make_optimizer


def quadratic(params):
    """f = 1/2 sum (p - 3)^2, gradient p - 3."""
    return {k: p - 3.0 for k, p in params.items()}


def test_adagrad_warmup_accumulates_then_steps_with_eps_inside_the_root():
    p = {"w": np.array([1.0, -2.0])}
    opt = Adagrad(lr=0.1, warmup=2, eps=1e-8)
    g1, g2, g3 = np.array([0.5, 1.0]), np.array([-1.0, 2.0]), np.array([2.0, 0.1])
    opt.update(p, {"w": g1})
    opt.update(p, {"w": g2})
    assert np.array_equal(p["w"], [1.0, -2.0])                  # warm-up: no step yet
    opt.update(p, {"w": g3})
    ss = g1 ** 2 + g2 ** 2 + g3 ** 2
    assert np.allclose(p["w"], np.array([1.0, -2.0]) - 0.1 * g3 / np.sqrt(ss + 1e-8), rtol=1e-15)


@pytest.mark.parametrize("name,kw", [("adagrad", {"lr": 0.5}), ("adam", {"lr": 0.1}), ("sgd", {"lr": 0.1})])
def test_optimizers_minimize_a_quadratic(name, kw):
    p = {"a": np.zeros((2, 3)), "b": np.ones(4)}
    opt = make_optimizer(name, **kw)
    for _ in range(500):
        opt.update(p, quadratic(p))
    assert all(np.allclose(v, 3.0, atol=1e-3) for v in p.values())


@pytest.mark.parametrize("cls", [Adagrad, Adam, SGD])
def test_state_round_trip_continues_bitwise(cls):
    rng = np.random.default_rng(0)
    grads = [{"w": rng.standard_normal(5)} for _ in range(6)]
    p1 = {"w": np.zeros(5)}
    o1 = cls(lr=0.05)
    for g in grads[:3]:
        o1.update(p1, g)
    saved_p, saved_state = {"w": p1["w"].copy()}, o1.state_dict()
    for g in grads[3:]:
        o1.update(p1, g)
    o2 = cls(lr=0.05)
    o2.load_state_dict(saved_state)
    for g in grads[3:]:
        o2.update(saved_p, g)
    assert np.array_equal(p1["w"], saved_p["w"]) and o2.t == 6
    assert all(isinstance(v, np.ndarray) for v in saved_state.values())   # savable with np.savez


def test_bad_optimizer_arguments():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop")
    with pytest.raises(ValueError, match="learning rate"):
        Adagrad(lr=-1)
    with pytest.raises(ValueError, match="different keys"):
        SGD().update({"a": np.zeros(1)}, {"b": np.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        Adam().update({"a": np.zeros(2)}, {"a": np.zeros(3)})
