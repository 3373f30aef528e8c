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

The concrete activations live in ``_units`` (``PReLU``, ``Swish``,
``Snake``, ``APL``, ``RReLU``) and ``_pade`` (``Pade``,
``pade_coefficients``); ``_check_number`` and ``_check_int`` validate their
arguments.
"""

import dataclasses
import math
from typing import Any
from typing import Callable

import keras
import numpy as np
from keras import ops

from keras_feedback._api import public
from keras_feedback._checks import check_bool


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

    def __init__(self, **kwargs: Any) -> None:
        # Only to annotate the constructor: the base Layer arguments.
        super().__init__(**kwargs)

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

    def __init__(self, per_unit: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.per_unit = check_bool("per_unit", per_unit)
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


# Every activation ``_units``, ``_pade`` and ``_extras`` add, by registry name.
EXTRA_NAMES = ("lisht", "snake", "rrelu")
LEARNABLE_NAMES = ("prelu", "learnable_swish", "learnable_snake", "pade", "apl")
