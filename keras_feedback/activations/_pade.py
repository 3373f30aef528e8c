"""Padé activation units: learnable rational functions, and their fit."""

import functools
from typing import Any
from typing import Tuple

import numpy as np
from keras import ops

from keras_feedback._api import public
from keras_feedback.activations import _registry
from keras_feedback.activations._learnable import LearnableActivation
from keras_feedback.activations._learnable import _check_int

# Padé units are fitted on this interval (as in Molina et al.).
PADE_FIT_RANGE = (-3.0, 3.0)
_PADE_FIT_POINTS = 1201


def _pade_value(numerator, denominator, x):
    """``P(x) / (1 + |x (b_1 + b_2 x + ...)|)``, both by Horner's rule."""
    p = numerator[-1]
    for j in range(len(numerator) - 2, -1, -1):
        p = p * x + numerator[j]
    r = denominator[-1]
    for k in range(len(denominator) - 2, -1, -1):
        r = r * x + denominator[k]
    return p / (1.0 + ops.abs(r * x))


def _pade(params, x, numerator_degree, denominator_degree):
    # The degrees are static options, not read from the parameters' shapes:
    # a compiled step may see those shapes relaxed to unknown.
    numerator, denominator = params["numerator"], params["denominator"]
    return _pade_value(
        [numerator[j] for j in range(numerator_degree + 1)],
        [denominator[k] for k in range(denominator_degree)],
        x,
    )


def _pade_target(approximates):
    if not isinstance(approximates, str):
        raise ValueError(
            "Argument `approximates` must be the name of an elementwise "
            f"activation, got {approximates!r}"
        )
    valid = _registry.elementwise_names()
    if approximates not in valid:
        if approximates not in _registry.names():
            _registry.get(approximates)  # Raises, listing close names.
        raise ValueError(
            "Argument `approximates` must name a fixed elementwise activation "
            f"({', '.join(valid)}), got {approximates!r}"
        )
    return _registry.get(approximates)


@public("keras_feedback.activations.pade_coefficients")
def pade_coefficients(
    approximates: str, numerator_degree: int = 5, denominator_degree: int = 4
) -> Tuple[np.ndarray, np.ndarray]:
    """Least-squares Padé coefficients of a named activation on [-3, 3].

    Fits ``P(x) / (1 + |sum_k b_k x^k|)`` to the activation on 1201 evenly
    spaced points: a linearised least-squares solve, then Levenberg-Marquardt
    on the safe form itself.

    Args:
        approximates: name of a fixed elementwise activation.
        numerator_degree: ``m``, degree of ``P``.
        denominator_degree: ``n``, number of ``b_k`` (``k = 1..n``).

    Returns:
        ``(a, b)``: float64 arrays of ``m + 1`` and ``n`` coefficients, in
        increasing powers of ``x``.
    """
    m = _check_int("numerator_degree", numerator_degree, 0)
    n = _check_int("denominator_degree", denominator_degree, 1)
    _pade_target(approximates)
    a, b = _fit_pade(approximates, m, n)
    return a.copy(), b.copy()


@functools.cache
def _fit_pade(approximates, m, n):
    fn = _registry.get(approximates)
    x = np.linspace(*PADE_FIT_RANGE, _PADE_FIT_POINTS)
    y = np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(x))), "float64")
    if not np.all(np.isfinite(y)):
        raise ValueError(
            f"Argument `approximates`: {approximates!r} is not finite on "
            f"{list(PADE_FIT_RANGE)}, so no Padé unit can approximate it"
        )
    numerator_powers = x[:, None] ** np.arange(m + 1)
    denominator_powers = x[:, None] ** np.arange(1, n + 1)
    # P(x) - y R(x) = y is linear in the coefficients (R taken >= 0).
    system = np.concatenate([numerator_powers, -y[:, None] * denominator_powers], 1)
    theta = np.linalg.lstsq(system, y, rcond=None)[0]

    def residual(theta):
        p = numerator_powers @ theta[: m + 1]
        r = denominator_powers @ theta[m + 1 :]
        return p / (1.0 + np.abs(r)) - y, p, r

    res, p, r = residual(theta)
    cost, damping = res @ res, 1e-3
    for _ in range(300):
        q = 1.0 + np.abs(r)
        jacobian = np.concatenate(
            [
                numerator_powers / q[:, None],
                -(p * np.sign(r) / q**2)[:, None] * denominator_powers,
            ],
            1,
        )
        gradient, hessian = jacobian.T @ res, jacobian.T @ jacobian
        scale = np.diag(np.diag(hessian) + 1e-12)
        while damping < 1e12:
            candidate = theta - np.linalg.solve(hessian + damping * scale, gradient)
            new = residual(candidate)
            if new[0] @ new[0] < cost:
                theta, (res, p, r) = candidate, new
                cost, damping = res @ res, max(damping / 3.0, 1e-12)
                break
            damping *= 4.0
        else:
            break
    return theta[: m + 1], theta[m + 1 :]


@public("keras_feedback.activations.Pade")
class Pade(LearnableActivation):
    """Padé activation unit: a learnable rational function.

    ``P(x) / Q(x)`` with ``P(x) = a_0 + a_1 x + ... + a_m x^m`` and the
    "safe" denominator ``Q(x) = 1 + |b_1 x + ... + b_n x^n|``, which is
    never below 1. The coefficients start as the least-squares fit of the
    activation ``approximates`` on [-3, 3] (``pade_coefficients``). Outside
    that interval the fit diverges from the target; training adapts it.

    Maximum absolute error of the initial unit on [-3, 3] with the default
    degrees (5, 4), evaluated in float32 (the tests check these bounds):

    | approximates | max error |
    |--------------|-----------|
    | tanh         | < 1e-4    |
    | sigmoid      | < 1e-5    |
    | silu / swish | < 1e-4    |
    | gelu         | < 2e-3    |
    | leaky_relu   | < 4e-2    |
    | relu         | < 5e-2    |

    Registered as ``"pade"`` (approximating tanh).

    Args:
        approximates: name of the fixed elementwise activation to start
            from, e.g. ``"tanh"``, ``"relu"``, ``"swish"``.
        numerator_degree: ``m``, an integer >= 0.
        denominator_degree: ``n``, an integer >= 1.
        per_unit: bool, one set of coefficients per unit or one for all.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> act = keras_feedback.activations.Pade("tanh", per_unit=False)
    >>> y = act(np.array([[-1.0, 0.5]], "float32"))
    >>> error = keras.ops.convert_to_numpy(y) - np.tanh([[-1.0, 0.5]])
    >>> bool(np.abs(error).max() < 1e-4)
    True

    Reference:
        Molina, Schramowski and Kersting, "Padé Activation Units: End-to-end
        Learning of Flexible Activation Functions in Deep Networks", ICLR
        2020.
    """

    PARAMETERS = ("numerator", "denominator")
    function = staticmethod(_pade)

    def __init__(
        self,
        approximates: str = "tanh",
        numerator_degree: int = 5,
        denominator_degree: int = 4,
        per_unit: bool = True,
        **kwargs: Any,
    ) -> None:
        initial = pade_coefficients(approximates, numerator_degree, denominator_degree)
        super().__init__(per_unit=per_unit, **kwargs)
        self._initial = initial
        self.approximates = approximates
        self.numerator_degree = numerator_degree
        self.denominator_degree = denominator_degree

    def options(self):
        return {
            "numerator_degree": self.numerator_degree,
            "denominator_degree": self.denominator_degree,
        }

    def build_parameters(self):
        numerator, denominator = self._initial
        self.add_parameter("numerator", numerator)
        self.add_parameter("denominator", denominator)

    def get_config(self):
        return {
            **super().get_config(),
            "approximates": self.approximates,
            "numerator_degree": self.numerator_degree,
            "denominator_degree": self.denominator_degree,
        }


_registry.register_activation("pade", Pade)
