"""Layers as pure forward/backward pairs with explicit caches (CS231n style).

Every ``*_forward`` returns ``(out, cache)``; the matching ``*_backward`` takes
``(dout, cache)`` and returns the gradient of the same scalar with respect to
each input.  Nothing is stored anywhere else, so each pair can be checked
against finite differences on its own (``tests/test_layers.py``).

Convention: ``W`` has shape ``(fan_in, fan_out)`` and is applied as
``x @ W + b``.  This is the transpose of the paper's ``W x``: rows of ``x``
are datapoints, which keeps a minibatch contiguous in memory.
"""
import numpy as np


def affine_forward(x, W, b):
    """out = x @ W + b.   x: (N, fan_in), W: (fan_in, fan_out), b: (fan_out,) -> (N, fan_out)."""
    return x @ W + b, (x, W)


def affine_backward(dout, cache):
    """dout: (N, fan_out) -> dx (N, fan_in), dW (fan_in, fan_out), db (fan_out,)."""
    x, W = cache
    dx = dout @ W.T
    dW = x.T @ dout
    db = dout.sum(axis=0)
    return dx, dW, db


def tanh_forward(x):
    out = np.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    out = cache
    return dout * (1.0 - out * out)          # d tanh(a)/da = 1 - tanh(a)^2


def sigmoid(x):
    """Logistic function without overflow: exp is only ever taken of -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_forward(x):
    out = sigmoid(x)
    return out, out


def sigmoid_backward(dout, cache):
    out = cache
    return dout * out * (1.0 - out)          # d s(a)/da = s(a) (1 - s(a))


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): finite for every finite x."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def softplus_forward(x):
    return softplus(x), x


def softplus_backward(dout, cache):
    x = cache
    return dout * sigmoid(x)                 # d softplus(a)/da = sigmoid(a)


def relu_forward(x):
    return np.maximum(x, 0.0), x


def relu_backward(dout, cache):
    x = cache
    return dout * (x > 0)


def clamp_forward(x, lo, hi):
    """Clip x to [lo, hi]; the gradient is zero where the clip is active.

    Used on log-variances so that exp(logvar) can neither overflow nor
    underflow to zero (see ``npvae.distributions.LOGVAR_MIN``).
    """
    return np.clip(x, lo, hi), (x > lo) & (x < hi)


def clamp_backward(dout, cache):
    inside = cache
    return dout * inside


ACTIVATIONS = {
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
    "relu": (relu_forward, relu_backward),
}


def get_activation(name):
    """Return the (forward, backward) pair of a hidden-unit nonlinearity by name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
