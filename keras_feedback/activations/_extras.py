"""Fixed activations Keras does not ship: ``lisht``, ``snake`` and ``rrelu``.

Each comes with its closed-form derivative, registered so that
``keras_feedback.activations.derivative(name)`` returns it; a derivative takes
the same arguments, with the same defaults, as its activation. ``rrelu`` is
registered as the ``RReLU`` layer (``keras_feedback.activations._units``),
which a cell feeds with its training noise; the function here is for direct
use. Options are Python numbers: the branches below are on those, never on
tensor values.
"""

import math
from typing import Any
from typing import Union

import keras
from keras import ops

from keras_feedback._api import public
from keras_feedback.activations import _registry
from keras_feedback.activations._derivatives import _float

# What the activations take: a tensor, a numpy array, a number, ...
TensorLike = Any

RRELU_LOWER = 1.0 / 8.0
RRELU_UPPER = 1.0 / 3.0


def _check_frequency(frequency):
    if (
        isinstance(frequency, bool)
        or not isinstance(frequency, (int, float))
        or not math.isfinite(frequency)
        or frequency <= 0
    ):
        raise ValueError(
            f"Argument `frequency` must be a finite number > 0, got {frequency!r}"
        )
    return float(frequency)


def check_rrelu_bounds(lower, upper):
    """Validates rrelu's slope range ``0 <= lower <= upper``; returns floats."""
    for name, value in (("lower", lower), ("upper", upper)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"Argument `{name}` must be a finite number >= 0, got {value!r}"
            )
    if lower > upper:
        raise ValueError(
            f"Argument `lower` must be <= `upper`, got lower={lower!r}, upper={upper!r}"
        )
    return float(lower), float(upper)


@public("keras_feedback.activations.lisht", serializable=True)
def lisht(x: TensorLike) -> Any:
    """Linearly scaled hyperbolic tangent: ``x * tanh(x)``.

    Args:
        x: input tensor.

    Returns:
        ``x * tanh(x)``, elementwise.

    Example:

    >>> x = keras.ops.convert_to_tensor([-1.0, 0.0, 2.0])
    >>> keras.ops.convert_to_numpy(
    ...     keras_feedback.activations.lisht(x)).round(4)
    array([0.7616, 0.    , 1.9281], dtype=float32)

    Reference:
        Roy et al., "LiSHT: Non-Parametric Linearly Scaled Hyperbolic
        Tangent Activation Function for Neural Networks", 2019.
    """
    x = _float(x)
    return x * ops.tanh(x)


def lisht_derivative(x):
    x = _float(x)
    t = ops.tanh(x)
    return t + x * (1.0 - t * t)


@public("keras_feedback.activations.snake", serializable=True)
def snake(x: TensorLike, frequency: Union[float, TensorLike] = 1.0) -> Any:
    """Snake with a fixed frequency: ``x + sin(a x)^2 / a``.

    Monotonic, periodic around the identity; good at extrapolating periodic
    signals. ``keras_feedback.activations.Snake`` learns ``a``.

    Args:
        x: input tensor.
        frequency: ``a``, a number > 0.

    Returns:
        ``x + sin(a x)^2 / a``, elementwise.

    Example:

    >>> x = keras.ops.convert_to_tensor([-1.0, 0.0, 1.0])
    >>> keras.ops.convert_to_numpy(
    ...     keras_feedback.activations.snake(x)).round(4)
    array([-0.2919,  0.    ,  1.7081], dtype=float32)

    Reference:
        Ziyin, Hartwig and Ueda, "Neural Networks Fail to Learn Periodic
        Functions and How to Fix It", NeurIPS 2020.
    """
    a = _check_frequency(frequency)
    x = _float(x)
    s = ops.sin(a * x)
    return x + s * s / a


def snake_derivative(x, frequency=1.0):
    a = _check_frequency(frequency)
    x = _float(x)
    return 1.0 + ops.sin(2.0 * a * x)


def rrelu_with_slope(x, slope):
    """``x`` where ``x >= 0``, else ``slope * x`` (slope: number or tensor)."""
    return ops.where(ops.greater_equal(x, 0.0), x, slope * x)


def _rrelu_slope(x, lower, upper, training, seed):
    if training:
        return keras.random.uniform(
            ops.shape(x), minval=lower, maxval=upper, dtype=x.dtype, seed=seed
        )
    return 0.5 * (lower + upper)


@public("keras_feedback.activations.rrelu", serializable=True)
def rrelu(
    x: TensorLike,
    lower: float = RRELU_LOWER,
    upper: float = RRELU_UPPER,
    training: bool = False,
    seed: Union[int, keras.random.SeedGenerator, None] = None,
) -> Any:
    """Randomized leaky ReLU.

    ``x`` for ``x >= 0``, else ``a x``, where in training ``a`` is drawn
    uniformly from ``[lower, upper]`` for every element and at inference is
    the mean slope ``(lower + upper) / 2``. In a cell, use the name
    ``"rrelu"`` (the `RReLU` layer): the cell then draws the slopes once per
    sequence from its seed generator while training.

    Args:
        x: input tensor.
        lower: smallest slope, >= 0.
        upper: largest slope, >= lower.
        training: draw random slopes (True) or use the mean slope.
        seed: seed of the slopes: an int (the same slopes on every call) or
            a `keras.random.SeedGenerator`.

    Returns:
        A tensor of ``x``'s shape.

    Example:

    >>> x = keras.ops.convert_to_tensor([-3.0, 3.0])
    >>> keras.ops.convert_to_numpy(keras_feedback.activations.rrelu(x)).round(4)
    array([-0.6875,  3.    ], dtype=float32)

    Reference:
        Xu et al., "Empirical Evaluation of Rectified Activations in
        Convolutional Network", 2015.
    """
    lower, upper = check_rrelu_bounds(lower, upper)
    x = _float(x)
    return rrelu_with_slope(x, _rrelu_slope(x, lower, upper, training, seed))


def rrelu_derivative(
    x, lower=RRELU_LOWER, upper=RRELU_UPPER, training=False, seed=None
):
    # In training the slopes are drawn as rrelu draws them: the same ones
    # for the same int seed.
    lower, upper = check_rrelu_bounds(lower, upper)
    x = _float(x)
    slope = _rrelu_slope(x, lower, upper, training, seed)
    ones = ops.ones_like(x)
    return ops.where(ops.greater_equal(x, 0.0), ones, slope * ones)


_registry.register_activation("lisht", lisht, lisht_derivative)
_registry.register_activation("snake", snake, snake_derivative)
