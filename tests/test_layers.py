import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npvae import layers as Lr

from .helpers import check_backward

dims = st.integers(min_value=1, max_value=6)


@settings(max_examples=25, deadline=None)
@given(n=dims, fan_in=dims, fan_out=dims, seed=st.integers(0, 2**31 - 1))
def test_affine_backward_matches_finite_differences(n, fan_in, fan_out, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((n, fan_in)), rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out)
    check_backward(Lr.affine_forward, Lr.affine_backward, [x, W, b], rng)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "relu"])
@settings(max_examples=20, deadline=None)
@given(n=dims, m=dims, seed=st.integers(0, 2**31 - 1))
def test_activation_backward_matches_finite_differences(name, n, m, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, (n, m))
    x[np.abs(x) < 1e-3] = 0.5            # keep relu's kink out of the stencil
    forward, backward = Lr.get_activation(name)
    check_backward(forward, backward, [x], rng)


def test_tanh_sigmoid_relu_softplus_backward_named():
    # each named backward against the formula it implements, at a few points
    x = np.array([[-2.0, -0.5, 0.3, 1.7]])
    g = np.ones_like(x)
    assert np.allclose(Lr.tanh_backward(g, Lr.tanh_forward(x)[1]), 1 - np.tanh(x) ** 2)
    s = 1 / (1 + np.exp(-x))
    assert np.allclose(Lr.sigmoid_backward(g, Lr.sigmoid_forward(x)[1]), s * (1 - s))
    assert np.allclose(Lr.softplus_backward(g, Lr.softplus_forward(x)[1]), s)
    assert np.array_equal(Lr.relu_backward(g, Lr.relu_forward(x)[1]), (x > 0).astype(float))


def test_clamp_backward_matches_finite_differences_inside_and_outside():
    rng = np.random.default_rng(0)
    x = np.array([[-50.0, -29.0, 0.0, 12.0, 29.5, 40.0]])
    check_backward(lambda a: Lr.clamp_forward(a, -30.0, 30.0), Lr.clamp_backward, [x], rng)
    out, cache = Lr.clamp_forward(x, -30.0, 30.0)
    assert out.min() == -30.0 and out.max() == 30.0
    assert np.array_equal(Lr.clamp_backward(np.ones_like(x), cache), [[0, 1, 1, 1, 1, 0]])


@settings(max_examples=50, deadline=None)
@given(v=st.floats(min_value=-3e4, max_value=3e4, allow_nan=False))
def test_sigmoid_and_softplus_are_finite_and_exact_for_extreme_inputs(v):
    x = np.array([v])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, sp = Lr.sigmoid(x), Lr.softplus(x)
    assert 0.0 <= s[0] <= 1.0 and np.isfinite(sp[0]) and sp[0] >= max(v, 0.0)
    # softplus(v) - softplus(-v) = v exactly in real arithmetic
    assert np.isclose(sp[0] - Lr.softplus(-x)[0], v, rtol=1e-12, atol=1e-12)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Lr.get_activation("swish")
