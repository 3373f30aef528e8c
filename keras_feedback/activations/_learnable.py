"""Activations with parameters: learnable ones, and rrelu's training noise.

A ``ParametricActivation`` is a Keras layer: it owns its weights (created in
``build``), serializes through ``get_config`` and is tracked by the layer it
is assigned to. Called on its own (``act(x)``, e.g. as a ``Dense``
activation) it behaves like any Keras activation layer.

The pure-function rule. Inside a feedback cell the activation never reads a
variable. Its value is a pure function of a dict of tensors and the input,
``act.pure(params, x)``, where

- ``act.pure`` is a ``PureActivation``: a frozen, hashable pair of a
  module-level function and static options (Python numbers). Everything
  static the function needs (a polynomial degree, a number of segments) is
  an option: a compiled step may see the parameters' shapes relaxed to
  unknown. Two activations
  with the same options have equal ``pure``\\ s, so a cell's ``StepSpec``
  (which holds it in place of the activation) stays a valid cache key for
  the step functions and compiled loops, and holds no reference to a layer;
- ``params = act.step_params(dtype, noise_shape, seed)`` is the dict of the
  activation's weights as tensors, plus, when ``noise_shape`` is given (the
  cell is training), any random tensors it needs (rrelu's slopes).

``FeedbackCell.step_params()`` puts that dict under the activation's slot
(``params["activation"]``, ``params["recurrent_activation"]``,
``params["feedback_activation"]``, ``params["output_activation"]``), next to
the cell's own weights, and the step math calls ``pure(params[slot], x)``.
The engines therefore receive every parameter as a tensor in the params
structure: the reference engine differentiates through it, and the XLA
engine's custom gradient returns the gradient of each one. Randomness is
drawn once per sequence, outside the step (like a recurrent dropout mask),
so recomputing a step in a backward pass gives the same value.

Parameters are per unit (``per_unit=True``: one value per feature of the
last input axis) or shared by all units. A cell builds its activation for the
width it is applied to: ``units`` for ``activation`` and
``recurrent_activation``, ``feedback_units`` for ``feedback_activation``,
``output_units`` for ``output_activation``.
"""

import dataclasses
import functools
import math
from typing import Callable

import keras
import numpy as np
from keras import ops

from keras_feedback._api import public
from keras_feedback.activations import _extras
from keras_feedback.activations import _registry

# Padé units are fitted on this interval (as in Molina et al.).
PADE_FIT_RANGE = (-3.0, 3.0)
_PADE_FIT_POINTS = 1201
# Snake divides by its frequency; keep it away from 0 while training.
_MIN_FREQUENCY = 1e-4


@public("keras_feedback.activations.PureActivation", serializable=False)
@dataclasses.dataclass(frozen=True)
class PureActivation:
    """A parametric activation as a pure function: ``(params, x) -> y``.

    Hashable and compared by value, so that it can sit in a cell's static
    ``StepSpec``.

    Args:
        function: a module-level function ``function(params, x, **options)``.
        options: ``((name, value), ...)``: static options, Python values.
    """

    function: Callable
    options: tuple = ()

    def __call__(self, params, x):
        return self.function(params, x, **dict(self.options))


def _check_number(name, value, minimum=None, strict=False):
    bad = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    )
    if not bad and minimum is not None:
        bad = value <= minimum if strict else value < minimum
    if bad:
        bound = ""
        if minimum is not None:
            bound = f" {'>' if strict else '>='} {minimum}"
        raise ValueError(
            f"Argument `{name}` must be a finite number{bound}, got {value!r}"
        )
    return float(value)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}, got {value!r}"
        )
    return value


@public("keras_feedback.activations.ParametricActivation")
class ParametricActivation(keras.layers.Layer):
    """Base class of activations whose parameters flow through a cell's params.

    Subclasses define ``function(params, x, **options)`` (a staticmethod:
    the activation's math, a pure function), ``options()`` (the static
    options passed to it) and, for weights, ``build``. See the module
    docstring for how a cell uses them.

    Call arguments:
        inputs: a tensor; per-unit parameters follow its last axis.
        training: bool; only activations with training noise use it.
    """

    @staticmethod
    def function(params, x):
        raise NotImplementedError

    def options(self):
        """The static options of ``function``: a dict of Python values."""
        return {}

    @property
    def pure(self):
        """This activation as a `PureActivation`: ``pure(params, x)``."""
        return PureActivation(
            type(self).function, tuple(sorted(self.options().items()))
        )

    def step_params(self, dtype=None, noise_shape=None, seed=None):
        """The ``params`` of ``pure``: a dict of tensors.

        Args:
            dtype: dtype of the tensors (default: the compute dtype).
            noise_shape: the shape of the input when training, so that an
                activation with training noise draws it; None at inference.
            seed: an int or `keras.random.SeedGenerator` for that noise.
        """
        return {}

    def call(self, inputs, training=False):
        inputs = ops.convert_to_tensor(inputs, self.compute_dtype)
        noise_shape = ops.shape(inputs) if training else None
        params = self.step_params(inputs.dtype, noise_shape, self._noise_seed())
        return self.pure(params, inputs)

    def _noise_seed(self):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape


@public("keras_feedback.activations.LearnableActivation")
class LearnableActivation(ParametricActivation):
    """A `ParametricActivation` with trainable weights, per unit or shared.

    Subclasses list their weights in ``PARAMETERS`` and create them in
    ``build_parameters()`` with ``add_parameter``.

    Args:
        per_unit: bool, one value of each parameter per unit (feature of the
            last input axis) rather than one shared by all units.
        **kwargs: base ``keras.layers.Layer`` arguments.
    """

    PARAMETERS = ()

    def __init__(self, per_unit=True, **kwargs):
        super().__init__(**kwargs)
        self.per_unit = bool(per_unit)
        self.units = None

    def build(self, input_shape):
        units = input_shape[-1] if input_shape else None
        if self.per_unit and units is None:
            raise ValueError(
                f"{type(self).__name__} with per_unit=True needs the last "
                f"input dimension, got input shape {tuple(input_shape or ())}"
            )
        self.units = units
        self.build_parameters()

    def build_parameters(self):
        raise NotImplementedError

    def add_parameter(self, name, initial, constraint=None):
        """Adds the weight ``name`` with the value ``initial`` for every unit.

        Args:
            name: weight name (one of ``PARAMETERS``).
            initial: a number or a 1-D array (a coefficient vector): the
                shared value; per unit it is repeated along a last axis.
            constraint: optional Keras constraint.
        """
        value = np.asarray(initial, "float64")
        shape = value.shape
        if self.per_unit:
            value = value[..., None]
            shape = shape + (self.units,)

        def initializer(shape, dtype=None):
            return ops.cast(np.broadcast_to(value, shape), dtype)

        variable = self.add_weight(
            name=name, shape=shape, initializer=initializer, constraint=constraint
        )
        setattr(self, name, variable)
        return variable

    def step_params(self, dtype=None, noise_shape=None, seed=None):
        dtype = dtype or self.compute_dtype
        return {
            name: ops.cast(getattr(self, name).value, dtype) for name in self.PARAMETERS
        }

    def get_config(self):
        return {**super().get_config(), "per_unit": self.per_unit}


def _prelu(params, x):
    return ops.maximum(x, 0.0) + params["alpha"] * ops.minimum(x, 0.0)


@public("keras_feedback.activations.PReLU")
class PReLU(LearnableActivation):
    """Parametric ReLU: ``max(x, 0) + alpha * min(x, 0)``, ``alpha`` learned.

    Registered as ``"prelu"``.

    Args:
        alpha: initial slope for negative inputs, a finite number.
        per_unit: bool, one ``alpha`` per unit or one for all.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> act = keras_feedback.activations.PReLU(alpha=0.1)
    >>> keras.ops.convert_to_numpy(act(np.array([[-2.0, 3.0]])))
    array([[-0.2,  3. ]], dtype=float32)

    Reference:
        He et al., "Delving Deep into Rectifiers", ICCV 2015.
    """

    PARAMETERS = ("alpha",)
    function = staticmethod(_prelu)

    def __init__(self, alpha=0.25, per_unit=True, **kwargs):
        alpha = _check_number("alpha", alpha)
        super().__init__(per_unit=per_unit, **kwargs)
        self.initial_alpha = alpha

    def build_parameters(self):
        self.add_parameter("alpha", self.initial_alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.initial_alpha}


def _swish(params, x):
    return x * ops.sigmoid(params["beta"] * x)


@public("keras_feedback.activations.Swish")
class Swish(LearnableActivation):
    """Swish with a learnable ``beta``: ``x * sigmoid(beta * x)``.

    ``beta = 1`` is silu; ``beta -> inf`` approaches relu, ``beta = 0`` is
    ``x / 2``. Registered as ``"learnable_swish"`` (``"swish"`` is Keras's
    fixed silu).

    Args:
        beta: initial ``beta``, a finite number.
        per_unit: bool, one ``beta`` per unit or one for all.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> act = keras_feedback.activations.Swish(beta=1.0, per_unit=False)
    >>> keras.ops.convert_to_numpy(act(np.array([[0.0, 2.0]]))).round(4)
    array([[0.    , 1.7616]], dtype=float32)

    Reference:
        Ramachandran, Zoph and Le, "Searching for Activation Functions",
        2017.
    """

    PARAMETERS = ("beta",)
    function = staticmethod(_swish)

    def __init__(self, beta=1.0, per_unit=True, **kwargs):
        beta = _check_number("beta", beta)
        super().__init__(per_unit=per_unit, **kwargs)
        self.initial_beta = beta

    def build_parameters(self):
        self.add_parameter("beta", self.initial_beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.initial_beta}


class _AtLeast(keras.constraints.Constraint):
    """Clips a weight to ``>= minimum`` after each optimizer step."""

    def __init__(self, minimum):
        self.minimum = minimum

    def __call__(self, w):
        return ops.maximum(w, self.minimum)

    def get_config(self):
        return {"minimum": self.minimum}


def _snake(params, x):
    a = params["frequency"]
    s = ops.sin(a * x)
    return x + s * s / a


@public("keras_feedback.activations.Snake")
class Snake(LearnableActivation):
    """Snake with a learnable frequency: ``x + sin(a x)^2 / a``.

    Training keeps ``a >= 1e-4``. ``keras_feedback.activations.snake`` is
    the fixed-frequency function. Registered as ``"learnable_snake"``.

    Args:
        frequency: initial ``a``, a number > 0.
        per_unit: bool, one ``a`` per unit or one for all.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> act = keras_feedback.activations.Snake(frequency=2.0)
    >>> keras.ops.convert_to_numpy(act(np.array([[0.0, 1.0]]))).round(4)
    array([[0.    , 1.4134]], dtype=float32)

    Reference:
        Ziyin, Hartwig and Ueda, "Neural Networks Fail to Learn Periodic
        Functions and How to Fix It", NeurIPS 2020.
    """

    PARAMETERS = ("frequency",)
    function = staticmethod(_snake)

    def __init__(self, frequency=1.0, per_unit=True, **kwargs):
        frequency = _check_number("frequency", frequency, 0.0, strict=True)
        super().__init__(per_unit=per_unit, **kwargs)
        self.initial_frequency = frequency

    def build_parameters(self):
        self.add_parameter(
            "frequency", self.initial_frequency, _AtLeast(_MIN_FREQUENCY)
        )

    def get_config(self):
        return {**super().get_config(), "frequency": self.initial_frequency}


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
def pade_coefficients(approximates, numerator_degree=5, denominator_degree=4):
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


@functools.lru_cache(maxsize=None)
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
        approximates="tanh",
        numerator_degree=5,
        denominator_degree=4,
        per_unit=True,
        **kwargs,
    ):
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


def _apl(params, x, segments):
    slopes, hinges = params["slopes"], params["hinges"]
    y = ops.relu(x)
    for s in range(segments):
        y = y + slopes[s] * ops.relu(hinges[s] - x)
    return y


@public("keras_feedback.activations.APL")
class APL(LearnableActivation):
    """Adaptive piecewise-linear unit.

    ``max(0, x) + sum_s a_s max(0, b_s - x)`` for ``s = 1..segments``, with
    learnable slopes ``a_s`` and hinges ``b_s``. It starts as relu
    (``a_s = slope``, default 0) with hinges evenly spaced in ``[-1, 1]``.
    Registered as ``"apl"``.

    Args:
        segments: number of hinges ``S``, an integer >= 1.
        slope: initial ``a_s``, a finite number.
        hinges: optional initial hinges: a list of ``segments`` finite
            numbers.
        per_unit: bool, one set of slopes and hinges per unit or one for all.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> act = keras_feedback.activations.APL(segments=1, slope=0.5)
    >>> keras.ops.convert_to_numpy(act(np.array([[-2.0, 3.0]])))
    array([[1., 3.]], dtype=float32)

    Reference:
        Agostinelli et al., "Learning Activation Functions to Improve Deep
        Neural Networks", ICLR 2015 workshop.
    """

    PARAMETERS = ("slopes", "hinges")
    function = staticmethod(_apl)

    def __init__(self, segments=2, slope=0.0, hinges=None, per_unit=True, **kwargs):
        segments = _check_int("segments", segments, 1)
        slope = _check_number("slope", slope)
        if hinges is None:
            hinges = np.linspace(-1.0, 1.0, segments) if segments > 1 else [0.0]
        try:
            values = [float(h) for h in hinges]
        except (TypeError, ValueError):
            values = None
        if (
            values is None
            or len(values) != segments
            or not all(math.isfinite(h) for h in values)
        ):
            raise ValueError(
                f"Argument `hinges` must be {segments} finite numbers (one per "
                f"segment), got {hinges!r}"
            )
        super().__init__(per_unit=per_unit, **kwargs)
        self.segments = segments
        self.initial_slope = slope
        self.initial_hinges = values

    def options(self):
        return {"segments": self.segments}

    def build_parameters(self):
        self.add_parameter("slopes", np.full(self.segments, self.initial_slope))
        self.add_parameter("hinges", np.asarray(self.initial_hinges))

    def get_config(self):
        return {
            **super().get_config(),
            "segments": self.segments,
            "slope": self.initial_slope,
            "hinges": list(self.initial_hinges),
        }


def _rrelu(params, x, lower, upper):
    slope = params["slope"] if "slope" in params else 0.5 * (lower + upper)
    return _extras.rrelu_with_slope(x, slope)


@public("keras_feedback.activations.RReLU")
class RReLU(ParametricActivation):
    """Randomized leaky ReLU as a layer: random slopes in training only.

    ``x`` for ``x >= 0``, else ``a x``: in training ``a ~ U[lower, upper]``,
    at inference the mean slope ``(lower + upper) / 2``. On its own it
    draws a slope per element and call. In a cell (name ``"rrelu"``) the
    cell draws one slope per sequence, batch row and unit, from its seed
    generator, and passes them in the step params: constant over time, like
    a recurrent dropout mask (inside ``keras.layers.RNN``, which calls the
    cell once per step, new slopes every step). No weights.

    Args:
        lower: smallest slope, >= 0.
        upper: largest slope, >= lower.
        seed: int seed of the slopes drawn when called on its own.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> act = keras_feedback.activations.RReLU(lower=0.1, upper=0.3)
    >>> keras.ops.convert_to_numpy(act(np.array([[-1.0, 2.0]])))
    array([[-0.2,  2. ]], dtype=float32)

    Reference:
        Xu et al., "Empirical Evaluation of Rectified Activations in
        Convolutional Network", 2015.
    """

    function = staticmethod(_rrelu)

    def __init__(
        self,
        lower=_extras.RRELU_LOWER,
        upper=_extras.RRELU_UPPER,
        seed=None,
        **kwargs,
    ):
        lower, upper = _extras.check_rrelu_bounds(lower, upper)
        super().__init__(**kwargs)
        self.lower = lower
        self.upper = upper
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def options(self):
        return {"lower": self.lower, "upper": self.upper}

    def step_params(self, dtype=None, noise_shape=None, seed=None):
        if noise_shape is None:
            return {}
        return {
            "slope": keras.random.uniform(
                noise_shape,
                minval=self.lower,
                maxval=self.upper,
                dtype=dtype or self.compute_dtype,
                seed=seed,
            )
        }

    def _noise_seed(self):
        return self.seed_generator

    def get_config(self):
        return {
            **super().get_config(),
            "lower": self.lower,
            "upper": self.upper,
            "seed": self.seed,
        }


_registry._register("prelu", PReLU)
_registry._register("learnable_swish", Swish)
_registry._register("learnable_snake", Snake)
_registry._register("pade", Pade)
_registry._register("apl", APL)
_registry._register("rrelu", RReLU, _extras.rrelu_derivative)

# Every activation this module and ``_extras`` add, by registry name.
EXTRA_NAMES = ("lisht", "snake", "rrelu")
LEARNABLE_NAMES = ("prelu", "learnable_swish", "learnable_snake", "pade", "apl")
