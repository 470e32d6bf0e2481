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


def adam_reference(p0, grads, lr, beta1, beta2, eps):
    """Kingma & Ba (2015), Algorithm 1, element by element in plain Python floats: the parameters
    after each step, m_t = b1 m + (1 - b1) g, v_t = b2 v + (1 - b2) g^2, bias-corrected
    m_hat = m_t / (1 - b1^t), v_hat = v_t / (1 - b2^t), theta -= lr m_hat / (sqrt(v_hat) + eps)."""
    theta, m, v, out = [float(a) for a in p0], [0.0] * len(p0), [0.0] * len(p0), []
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            gi = float(gi)
            m[i] = beta1 * m[i] + (1.0 - beta1) * gi
            v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi
            m_hat, v_hat = m[i] / (1.0 - beta1 ** t), v[i] / (1.0 - beta2 ** t)
            theta[i] -= lr * m_hat / (v_hat ** 0.5 + eps)
        out.append(list(theta))
    return out


ADAM_GRADS = [np.array([0.5, -1.0, 2e-8, 3.0]), np.array([-0.25, -2.0, 1e-8, 0.0]), np.array([1.5, 0.5, -3e-8, -4.0])]


@pytest.mark.parametrize("kw", [{}, {"lr": 0.3, "beta1": 0.8, "beta2": 0.95, "eps": 0.1}])
def test_adam_three_steps_match_kingma_and_ba_with_bias_correction(kw):
    """Three hand-computed steps: a missing bias correction (step 1 would be ~sqrt(1-b2)/(1-b1) = 0.32
    times lr, not lr), eps inside the root, or a wrong default would each change the numbers.  The
    third coordinate's gradients are ~eps (1e-8), where eps's placement decides the step."""
    assert (Adam().lr, Adam().beta1, Adam().beta2, Adam().eps) == (1e-3, 0.9, 0.999, 1e-8)   # documented defaults
    hyper = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, **kw}
    p0 = np.array([1.0, -2.0, 0.5, 0.0])
    p = {"w": p0.copy()}
    opt = Adam(**kw)
    expected = adam_reference(p0, ADAM_GRADS, **hyper)
    for step, (g, want) in enumerate(zip(ADAM_GRADS, expected), start=1):
        opt.update(p, {"w": g.copy()})
        assert opt.t == step
        np.testing.assert_allclose(p["w"], want, rtol=1e-12, atol=0)
    # step 1 of Adam moves every coordinate with |g| >> eps by lr against the gradient's sign (bias correction)
    first = {"w": p0.copy()}
    Adam(**kw).update(first, {"w": ADAM_GRADS[0].copy()})
    if hyper["eps"] == 1e-8:
        np.testing.assert_allclose((first["w"] - p0)[[0, 1, 3]], -hyper["lr"] * np.sign(ADAM_GRADS[0][[0, 1, 3]]),
                                   rtol=1e-7)


def test_sgd_three_steps_are_heavy_ball_momentum_as_documented():
    """npvae's SGD documents  v <- m v - lr g;  p <- p + v  with m = 0.9 and lr = 0.01 by default:
    three hand-computed steps of the parameters and of the stored velocity."""
    opt = SGD()
    assert (opt.lr, opt.momentum) == (0.01, 0.9)
    lr, mu = 0.01, 0.9
    p0 = np.array([1.0, -2.0, 0.5])
    g1, g2, g3 = np.array([0.5, -1.0, 2.0]), np.array([-0.25, -2.0, 1.0]), np.array([1.5, 0.5, -4.0])
    p = {"w": p0.copy()}
    v1 = -lr * g1
    v2 = mu * v1 - lr * g2
    v3 = mu * v2 - lr * g3
    for g, v, want in [(g1, v1, p0 + v1), (g2, v2, p0 + v1 + v2), (g3, v3, p0 + v1 + v2 + v3)]:
        opt.update(p, {"w": g.copy()})
        np.testing.assert_allclose(p["w"], want, rtol=1e-12, atol=0)
        np.testing.assert_allclose(opt.state["velocity"]["w"], v, rtol=1e-12, atol=0)
    # written out by hand for the first coordinate: v = -.005, then -.0045 + .0025 = -.002, then -.0018 - .015
    np.testing.assert_allclose(p["w"][0], 1.0 - 0.005 - 0.002 - 0.0168, rtol=1e-12)


def test_sgd_with_momentum_zero_is_plain_gradient_descent_and_only_adagrad_warms_up():
    p = {"w": np.array([1.0, -2.0])}
    opt = SGD(lr=0.1, momentum=0.0)
    for g in (np.array([0.5, 1.0]), np.array([-1.0, 2.0])):
        before = p["w"].copy()
        opt.update(p, {"w": g})
        np.testing.assert_allclose(p["w"], before - 0.1 * g, rtol=1e-12, atol=0)
    # Adam and SGD have no warm-up: their very first call already moves p (Adagrad's is tested above)
    for cls in (Adam, SGD):
        q = {"w": np.array([1.0, -2.0])}
        cls().update(q, {"w": np.array([0.5, 1.0])})
        assert np.all(q["w"] != [1.0, -2.0])
        with pytest.raises(TypeError):
            cls(warmup=2)


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
