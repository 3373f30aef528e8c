"""Learnable activations with few weights, and rrelu's training noise.

``PReLU``, ``Swish``, ``Snake`` and ``APL`` are ``LearnableActivation``\\ s;
``RReLU`` is a ``ParametricActivation`` without weights whose slopes are
random in training. See ``_learnable`` for how a cell passes their
parameters to the step math.
"""

import math
from typing import Any
from typing import Optional
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_feedback._api import public
from keras_feedback.activations import _extras
from keras_feedback.activations import _registry
from keras_feedback.activations._learnable import LearnableActivation
from keras_feedback.activations._learnable import ParametricActivation
from keras_feedback.activations._learnable import _check_int
from keras_feedback.activations._learnable import _check_number

# Snake divides by its frequency; keep it away from 0 while training.
_MIN_FREQUENCY = 1e-4


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

    def __init__(
        self, alpha: float = 0.25, per_unit: bool = True, **kwargs: Any
    ) -> None:
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

    def __init__(self, beta: float = 1.0, per_unit: bool = True, **kwargs: Any) -> None:
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

    def __init__(
        self, frequency: float = 1.0, per_unit: bool = True, **kwargs: Any
    ) -> None:
        frequency = _check_number("frequency", frequency, 0.0, strict=True)
        super().__init__(per_unit=per_unit, **kwargs)
        self.initial_frequency = frequency

    def build_parameters(self):
        self.add_parameter(
            "frequency", self.initial_frequency, _AtLeast(_MIN_FREQUENCY)
        )

    def get_config(self):
        return {**super().get_config(), "frequency": self.initial_frequency}


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

    def __init__(
        self,
        segments: int = 2,
        slope: float = 0.0,
        hinges: Optional[Sequence[float]] = None,
        per_unit: bool = True,
        **kwargs: Any,
    ) -> None:
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
        lower: float = _extras.RRELU_LOWER,
        upper: float = _extras.RRELU_UPPER,
        seed: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
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


_registry.register_activation("prelu", PReLU)
_registry.register_activation("learnable_swish", Swish)
_registry.register_activation("learnable_snake", Snake)
_registry.register_activation("apl", APL)
_registry.register_activation("rrelu", RReLU, _extras.rrelu_derivative)
