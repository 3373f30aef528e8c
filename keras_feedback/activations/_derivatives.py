"""Analytic derivatives of the elementwise Keras activations.

Each ``<name>_derivative`` takes the same arguments, with the same defaults,
as the Keras activation it differentiates (``elu(x, alpha=1.0)`` ->
``elu_derivative(x, alpha=1.0)``) and returns ``d activation(x) / dx``
elementwise, in the dtype of ``x``. The formulas follow the definitions in
``keras.activations`` exactly: Keras 3's ``hard_sigmoid`` is
``relu6(x + 3) / 6``, ``leaky_relu`` defaults to a slope of 0.2, ``gelu``
defaults to the exact, erf-based form. At a kink the value is one of the
one-sided derivatives, not necessarily the one autodiff picks.

Keras options are Python numbers; the branches below are on those, never on
tensor values.
"""

import math

import keras
from keras import ops

# Constants of tf.nn.selu (Klambauer et al., 2017).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _float(x):
    x = ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        x = ops.cast(x, keras.config.floatx())
    return x


def _mask(condition, x):
    return ops.cast(condition, x.dtype)


def _inside(x, low, high):
    """1 where ``low < x < high``, else 0."""
    return _mask(ops.logical_and(ops.greater(x, low), ops.less(x, high)), x)


def celu_derivative(x, alpha=1.0):
    x = _float(x)
    return ops.where(ops.greater(x, 0.0), ops.ones_like(x), ops.exp(x / alpha))


def elu_derivative(x, alpha=1.0):
    x = _float(x)
    return ops.where(ops.greater(x, 0.0), ops.ones_like(x), alpha * ops.exp(x))


def exponential_derivative(x):
    return ops.exp(_float(x))


def gelu_derivative(x, approximate=False):
    x = _float(x)
    if approximate:
        # gelu = x s with s = (1 + tanh(u)) / 2 = sigmoid(2u),
        # u = sqrt(2/pi) (x + 0.044715 x^3); sigmoid avoids 1 + tanh(u)
        # cancelling for negative u.
        u = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
        du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
        s = ops.sigmoid(2.0 * u)
        return s + 2.0 * x * s * ops.sigmoid(-2.0 * u) * du
    # Phi(x) + x phi(x), the normal CDF and density; erfc keeps Phi accurate
    # in the left tail, where 1 + erf(x / sqrt(2)) would cancel.
    cdf = 0.5 * ops.erfc(-x / _SQRT_2)
    pdf = _INV_SQRT_2PI * ops.exp(-0.5 * x * x)
    return cdf + x * pdf


def hard_shrink_derivative(x, threshold=0.5):
    x = _float(x)
    return _mask(ops.greater(ops.abs(x), threshold), x)


def hard_sigmoid_derivative(x):
    x = _float(x)
    return _inside(x, -3.0, 3.0) / 6.0


def hard_silu_derivative(x):
    x = _float(x)
    # x * hard_sigmoid(x), by the product rule.
    return ops.relu6(x + 3.0) / 6.0 + x * hard_sigmoid_derivative(x)


def hard_tanh_derivative(x):
    x = _float(x)
    return _inside(x, -1.0, 1.0)


def leaky_relu_derivative(x, negative_slope=0.2):
    x = _float(x)
    ones = ops.ones_like(x)
    return ops.where(ops.greater(x, 0.0), ones, negative_slope * ones)


def linear_derivative(x):
    return ops.ones_like(_float(x))


def log_sigmoid_derivative(x):
    return ops.sigmoid(-_float(x))


def mish_derivative(x):
    x = _float(x)
    t = ops.tanh(ops.softplus(x))
    return t + x * (1.0 - t * t) * ops.sigmoid(x)


def relu_derivative(x, negative_slope=0.0, max_value=None, threshold=0.0):
    x = _float(x)
    # keras.activations.relu passes x through above `threshold`, then clips
    # to [0, max_value] when max_value is set, and subtracts
    # negative_slope * relu(threshold - x).
    lower = threshold if max_value is None else max(threshold, 0.0)
    active = ops.greater(x, lower)
    if max_value is not None:
        active = ops.logical_and(active, ops.less(x, max_value))
    slope = _mask(active, x)
    if negative_slope != 0.0:
        slope = slope + negative_slope * _mask(ops.less(x, threshold), x)
    return slope


def relu6_derivative(x):
    x = _float(x)
    return _inside(x, 0.0, 6.0)


def selu_derivative(x):
    x = _float(x)
    return _SELU_SCALE * ops.where(
        ops.greater(x, 0.0), ops.ones_like(x), _SELU_ALPHA * ops.exp(x)
    )


def sigmoid_derivative(x):
    s = ops.sigmoid(_float(x))
    return s * (1.0 - s)


def silu_derivative(x):
    x = _float(x)
    s = ops.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def soft_shrink_derivative(x, threshold=0.5):
    x = _float(x)
    return _mask(ops.greater(ops.abs(x), threshold), x)


def softplus_derivative(x):
    return ops.sigmoid(_float(x))


def softsign_derivative(x):
    x = _float(x)
    return 1.0 / ops.square(1.0 + ops.abs(x))


def sparse_plus_derivative(x):
    x = _float(x)
    # 0 below -1, (x + 1)^2 / 4 inside, x above 1.
    return ops.clip(0.5 * (x + 1.0), 0.0, 1.0)


def sparse_sigmoid_derivative(x):
    x = _float(x)
    return 0.5 * _inside(x, -1.0, 1.0)


def squareplus_derivative(x, b=4):
    x = _float(x)
    return 0.5 * (1.0 + x / ops.sqrt(x * x + b))


def tanh_derivative(x):
    t = ops.tanh(_float(x))
    return 1.0 - t * t


def tanh_shrink_derivative(x):
    t = ops.tanh(_float(x))
    return t * t


def threshold_derivative(x, threshold, default_value):
    del default_value  # A constant: it has no slope.
    x = _float(x)
    return _mask(ops.greater(x, threshold), x)


# Canonical Keras name (the activation's ``__name__``) -> its derivative.
DERIVATIVES = {
    "celu": celu_derivative,
    "elu": elu_derivative,
    "exponential": exponential_derivative,
    "gelu": gelu_derivative,
    "hard_shrink": hard_shrink_derivative,
    "hard_sigmoid": hard_sigmoid_derivative,
    "hard_silu": hard_silu_derivative,
    "hard_tanh": hard_tanh_derivative,
    "leaky_relu": leaky_relu_derivative,
    "linear": linear_derivative,
    "log_sigmoid": log_sigmoid_derivative,
    "mish": mish_derivative,
    "relu": relu_derivative,
    "relu6": relu6_derivative,
    "selu": selu_derivative,
    "sigmoid": sigmoid_derivative,
    "silu": silu_derivative,
    "soft_shrink": soft_shrink_derivative,
    "softplus": softplus_derivative,
    "softsign": softsign_derivative,
    "sparse_plus": sparse_plus_derivative,
    "sparse_sigmoid": sparse_sigmoid_derivative,
    "squareplus": squareplus_derivative,
    "tanh": tanh_derivative,
    "tanh_shrink": tanh_shrink_derivative,
    "threshold": threshold_derivative,
}
