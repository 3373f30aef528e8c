"""``FeedbackCellBase``: what the dense and the convolutional cells share.

A cell is its step math (``keras_feedback.cells``) and its weights: this base
validates and stores the cell's arguments, creates the weights through one
hook (``kernel_shape``: a matrix for the dense cell, a convolution kernel for
the convolutional one), draws dropout masks, serialises the config, and
describes the step to the engine (``recurrence``). It never loops over time.
"""

from typing import Callable
from typing import Optional
from typing import Union

import keras
import tensorflow as tf

from keras_feedback import activations
from keras_feedback import cores
from keras_feedback._checks import check_bool
from keras_feedback.cells import _feedback_math as math
from keras_feedback.cores._base import resolve as resolve_core

# An activation: a name, a callable, or a learnable activation instance.
ActivationLike = Union[str, Callable, None]
# A core: an alias ("gru", ...), a keras_feedback.cores.Core, its config.
CoreLike = Union[str, cores.Core, dict]
# What keras.initializers.get / regularizers.get / constraints.get take.
InitializerLike = Union[str, dict, keras.initializers.Initializer, Callable]
RegularizerLike = Union[str, dict, keras.regularizers.Regularizer, Callable, None]
ConstraintLike = Union[str, dict, keras.constraints.Constraint, Callable, None]
# Weight groups: name -> (initializer/regularizer/constraint argument prefix).
KERNEL_GROUPS = (
    "kernel",
    "recurrent",
    "feedback",
    "attention",
    "output",
    "memory",
    "bias",
)
_KINDS = (
    ("initializer", keras.initializers.get, keras.initializers.serialize),
    ("regularizer", keras.regularizers.get, keras.regularizers.serialize),
    ("constraint", keras.constraints.get, keras.constraints.serialize),
)
# Which parameters are the feedback part (for staged training).
FEEDBACK_PARAMS = (
    "feedback_recurrent_kernel",
    "feedback_kernel",
    "feedback_bias",
    "attention_kernel",
    "attention_bias",
    "input_feeding_kernel",
)
# The arguments of memory attention (dense cell only).
MEMORY_ARGS = (
    "memory_attention",
    "memory_units",
    "input_feeding",
    "memory_initializer",
    "memory_regularizer",
    "memory_constraint",
)


def check_int(name, value, minimum, allow_none=False):
    """``value`` if it is an int ``>= minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive" if minimum > 0 else "a non-negative"
        none = " or None" if allow_none else ""
        raise ValueError(
            f"Argument `{name}` must be {kind} integer{none}, got {value!r}"
        )
    return value


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Argument `{name}` must be a float in [0, 1), got {value!r}")
    return float(value)


def _step_form(activation):
    """What the ``StepSpec`` holds: a parametric activation's pure function."""
    if isinstance(activation, activations.ParametricActivation):
        return activation.pure
    return activation


def _serialize_activation(activation):
    config = activations.serialize(activation)
    if isinstance(activation, activations.ParametricActivation):
        # The cell builds it, in its own name scope, for the width it needs.
        config.pop("build_config", None)
    return config


class FeedbackCellBase(keras.layers.Layer):
    """The shared part of the feedback cells; see ``FeedbackCell``.

    Subclasses set ``SIZE_NAMES`` (their names of ``units``,
    ``feedback_units``, ``output_units`` in errors and configs) and implement
    ``kernel_shape``, ``position_shape``, ``build``, ``recurrence``,
    ``engine_inputs`` and the layout hooks (``state_shapes``, ``to_engine``,
    ``from_engine``).
    """

    SIZE_NAMES = {
        "units": "units",
        "feedback_units": "feedback_units",
        "output_units": "output_units",
    }

    def __init__(
        self,
        units: int,
        feedback_units: Optional[int] = None,
        core: CoreLike = "gru",
        activation: ActivationLike = None,
        recurrent_activation: ActivationLike = None,
        feedback_activation: ActivationLike = "sigmoid",
        output_units: Optional[int] = None,
        output_activation: ActivationLike = None,
        attention: bool = False,
        residual: bool = False,
        layer_norm: bool = False,
        use_bias: bool = True,
        kernel_initializer: InitializerLike = "glorot_uniform",
        recurrent_initializer: InitializerLike = "orthogonal",
        feedback_initializer: InitializerLike = "glorot_uniform",
        attention_initializer: InitializerLike = "glorot_uniform",
        output_initializer: InitializerLike = "glorot_uniform",
        memory_initializer: InitializerLike = "glorot_uniform",
        bias_initializer: InitializerLike = "zeros",
        kernel_regularizer: RegularizerLike = None,
        recurrent_regularizer: RegularizerLike = None,
        feedback_regularizer: RegularizerLike = None,
        attention_regularizer: RegularizerLike = None,
        output_regularizer: RegularizerLike = None,
        memory_regularizer: RegularizerLike = None,
        bias_regularizer: RegularizerLike = None,
        kernel_constraint: ConstraintLike = None,
        recurrent_constraint: ConstraintLike = None,
        feedback_constraint: ConstraintLike = None,
        attention_constraint: ConstraintLike = None,
        output_constraint: ConstraintLike = None,
        memory_constraint: ConstraintLike = None,
        bias_constraint: ConstraintLike = None,
        unit_forget_bias: Optional[bool] = None,
        reset_after: Optional[bool] = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: Optional[int] = None,
        memory_attention: Optional[str] = None,
        memory_units: Optional[int] = None,
        input_feeding: Optional[bool] = None,
        **kwargs,
    ):
        names = self.SIZE_NAMES
        check_int(names["units"], units, 1)
        if feedback_units is None:
            feedback_units = units
        check_int(names["feedback_units"], feedback_units, 0)
        check_int(names["output_units"], output_units, 1, allow_none=True)
        core = resolve_core(core, unit_forget_bias, reset_after)
        dropout = _check_rate("dropout", dropout)
        recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        input_feeding = self._check_memory_attention(
            memory_attention, memory_units, input_feeding
        )
        super().__init__(**kwargs)
        self.units = units
        self.feedback_units = feedback_units
        core.check_units(units)
        if not core.input_kernel and (memory_attention or not self.SUPPORTS_MEMORY):
            raise ValueError(
                f"Argument `core`={core!r} reads the raw inputs: it runs in "
                "keras_feedback.layers.Feedback without memory attention"
            )
        self.core_object = core
        # A Keras layer the core owns (a wrapped Keras cell): tracked here,
        # so that its weights are the cell's and saved with it.
        self.core_layer = core.layer()
        # What `core` reads back as (and the config writes): the alias of a
        # built-in core with default options, else the core itself.
        alias = cores.serialize(core)
        self.core = alias if isinstance(alias, str) else core
        if activation is None:
            activation = core.default_activation
        if recurrent_activation is None:
            recurrent_activation = core.default_recurrent_activation
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.feedback_activation = activations.get(feedback_activation)
        self.output_units = output_units
        self.output_activation = activations.get(output_activation)
        self.attention = check_bool("attention", attention)
        self.residual = check_bool("residual", residual)
        self.layer_norm = check_bool("layer_norm", layer_norm)
        self.use_bias = check_bool("use_bias", use_bias)
        groups = {
            "kernel": (kernel_initializer, kernel_regularizer, kernel_constraint),
            "recurrent": (
                recurrent_initializer,
                recurrent_regularizer,
                recurrent_constraint,
            ),
            "feedback": (
                feedback_initializer,
                feedback_regularizer,
                feedback_constraint,
            ),
            "attention": (
                attention_initializer,
                attention_regularizer,
                attention_constraint,
            ),
            "output": (output_initializer, output_regularizer, output_constraint),
            "memory": (memory_initializer, memory_regularizer, memory_constraint),
            "bias": (bias_initializer, bias_regularizer, bias_constraint),
        }
        for group, values in groups.items():
            for (kind, getter, _), value in zip(_KINDS, values):
                # Without memory attention its arguments stay as given: making
                # an initializer draws a seed from Python's random module,
                # which would change every later layer's initial weights.
                if group != "memory" or memory_attention is not None:
                    value = getter(value)
                setattr(self, f"{group}_{kind}", value)
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.memory_attention = memory_attention
        self.memory_units = memory_units
        self.input_feeding = input_feeding
        self.memory_features = None  # known at build, from the memory's shape
        self._check_activations()
        self.spec = math.StepSpec(
            core=core,
            units=units,
            feedback_units=feedback_units,
            output_units=output_units,
            attention=self.attention,
            residual=self.residual,
            layer_norm=self.layer_norm,
            use_bias=self.use_bias,
            activation=_step_form(self.activation),
            recurrent_activation=_step_form(self.recurrent_activation),
            feedback_activation=_step_form(self.feedback_activation),
            output_activation=_step_form(self.output_activation),
            memory_attention=memory_attention,
            memory_units=memory_units,
            input_feeding=input_feeding,
        )

    # Whether the cell can attend over a memory (the dense one).
    SUPPORTS_MEMORY = False

    def _check_memory_attention(self, memory_attention, memory_units, input_feeding):
        """Checks the memory attention arguments; returns ``input_feeding``
        (None: True with memory attention, False without)."""
        if memory_attention is not None:
            if not self.SUPPORTS_MEMORY:
                raise ValueError(
                    f"Argument `memory_attention`={memory_attention!r}: "
                    f"{type(self).__name__} has no memory attention; use "
                    "keras_feedback.layers.Feedback"
                )
            if memory_attention not in math.MEMORY_ATTENTIONS:
                raise ValueError(
                    "Argument `memory_attention` must be one of "
                    f"{math.MEMORY_ATTENTIONS} or None, got {memory_attention!r}"
                )
        check_int("memory_units", memory_units, 1, allow_none=True)
        if memory_attention is None:
            if memory_units is not None:
                raise ValueError(
                    f"Argument `memory_units`={memory_units!r} needs "
                    "`memory_attention` ('additive', 'dot' or 'scaled_dot')"
                )
            if input_feeding:
                raise ValueError(
                    "Argument `input_feeding`=True needs `memory_attention` "
                    "('additive', 'dot' or 'scaled_dot'): it feeds the attended "
                    "output back into the next step"
                )
            return False
        if input_feeding is not None and not isinstance(input_feeding, bool):
            raise TypeError(
                f"Argument `input_feeding` must be a bool or None, got {input_feeding!r}"
            )
        return True if input_feeding is None else input_feeding

    def _check_activations(self):
        """Refuses activations the step math cannot keep pure, or that do
        nothing."""
        used = {
            "feedback_activation": bool(self.feedback_units),
            "output_activation": bool(self.output_units),
        }
        seen = {}
        for slot in math.ACTIVATION_SLOTS:
            act = getattr(self, slot)
            if isinstance(act, keras.layers.Layer) and not isinstance(
                act, activations.ParametricActivation
            ):
                raise TypeError(
                    f"Argument `{slot}` is a Keras layer ({act!r}); the cell's "
                    "step cannot read layer weights. Use a keras_feedback."
                    "activations.ParametricActivation (PReLU, Swish, Snake, "
                    "Pade, APL, RReLU)."
                )
            if not isinstance(act, activations.ParametricActivation):
                continue
            if not used.get(slot, True):
                size = slot.replace("activation", "units")
                raise ValueError(
                    f"Argument `{slot}`={act!r} has no effect with "
                    f"{self.SIZE_NAMES[size]}={getattr(self, size)!r}"
                )
            if id(act) in seen:
                raise ValueError(
                    f"Arguments `{seen[id(act)]}` and `{slot}` got the same "
                    f"activation instance {act!r}: pass a separate instance per "
                    "argument (each builds its own parameters)"
                )
            seen[id(act)] = slot

    # --- weights ------------------------------------------------------------

    def kernel_shape(self, inputs, outputs, pointwise=False):
        """The shape of a kernel from ``inputs`` to ``outputs`` channels;
        ``pointwise``: per position (the attention gate, the readout)."""
        raise NotImplementedError

    def _add(self, name, shape, group, initializer=None):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer or getattr(self, f"{group}_initializer"),
            regularizer=getattr(self, f"{group}_regularizer"),
            constraint=getattr(self, f"{group}_constraint"),
        )

    # Keras's names for the options of the built-in cores.
    unit_forget_bias = property(
        lambda self: getattr(self.core_object, "unit_forget_bias", None)
    )
    reset_after = property(lambda self: getattr(self.core_object, "reset_after", None))

    def _add_core_weight(self, weight):
        shape = weight.shape
        if weight.linear:
            shape = self.kernel_shape(shape[1], shape[2])
        initializer = getattr(self, f"{weight.group}_initializer")
        if weight.initializer is not None:
            initializer = weight.initializer(initializer)
        variable = self.add_weight(
            name=weight.name,
            shape=shape,
            initializer=initializer,
            regularizer=getattr(self, f"{weight.group}_regularizer"),
            constraint=weight.constraint or getattr(self, f"{weight.group}_constraint"),
        )
        setattr(self, weight.name, variable)

    def load_own_variables(self, store):
        if self.weights and not len(store.keys()):
            raise ValueError(
                f"Layer {self.name!r}: the weights file holds no weights for it. "
                "Keras keys a layer's weights in a .weights.h5 file by the "
                "layer's class (gru, lstm, simple_rnn, ...), so a Keras model's "
                "file loads into that model only: load it there, then make the "
                "Feedback model with keras_feedback.layers.convert(model)"
            )
        super().load_own_variables(store)

    def build_weights(self, features):
        """Creates every weight, for inputs of ``features`` channels (and,
        with memory attention, a memory of ``memory_features``)."""
        units, fb, out = self.units, self.feedback_units, self.output_units
        width = self.spec.width
        shape = self.kernel_shape
        core = self.core_object
        if core.input_kernel:
            self.kernel = self._add("kernel", shape(features, width), "kernel")
        else:
            core.build(features + fb)
        for weight in self.core_object.weights(units):
            if weight.group != "bias" or self.use_bias:
                self._add_core_weight(weight)
        if fb and core.input_kernel:
            self.feedback_recurrent_kernel = self._add(
                "feedback_recurrent_kernel", shape(fb, width), "feedback"
            )
        if fb:
            self.feedback_kernel = self._add(
                "feedback_kernel", shape(units, fb), "feedback"
            )
            if self.use_bias:
                self.feedback_bias = self._add("feedback_bias", (fb,), "bias")
        if self.attention:
            self.attention_kernel = self._add(
                "attention_kernel", shape(units + fb, units, True), "attention"
            )
            if self.use_bias:
                self.attention_bias = self._add("attention_bias", (units,), "bias")
        if out:
            self.output_kernel = self._add(
                "output_kernel", shape(units + fb, out, True), "output"
            )
            if self.use_bias:
                self.output_bias = self._add("output_bias", (out,), "bias")
        if self.memory_attention:
            self._build_memory_weights(width)
        if self.layer_norm:
            self.layer_norm_gamma = self.add_weight(
                name="layer_norm_gamma", shape=(units,), initializer="ones"
            )
            self.layer_norm_beta = self.add_weight(
                name="layer_norm_beta", shape=(units,), initializer="zeros"
            )
        # A sub-layer's weights come after the cell's own in `weights`.
        for slot, (act, act_width) in self._parametric_activations().items():
            if not act.built:
                act.build((None, act_width))
            elif getattr(act, "per_unit", False) and act.units != act_width:
                raise ValueError(
                    f"Argument `{slot}`: {act!r} was built for {act.units} "
                    f"units, but the cell applies it to {act_width}"
                )

    def _build_memory_weights(self, width):
        units, depth, spec = self.units, self.spec.memory_depth, self.spec
        memory = self.memory_features
        if memory is None:
            raise ValueError(
                f"Layer with memory_attention={self.memory_attention!r} needs the "
                "memory's feature size to build: call it with `memory`"
            )
        self.memory_kernel = self._add("memory_kernel", (memory, depth), "memory")
        if spec.memory_query:
            self.memory_query_kernel = self._add(
                "memory_query_kernel", (units, depth), "memory"
            )
        if spec.memory_attention == "additive":
            self.memory_score_kernel = self._add(
                "memory_score_kernel", (depth,), "memory"
            )
        self.memory_output_kernel = self._add(
            "memory_output_kernel", (units + memory, units), "memory"
        )
        if self.use_bias:
            self.memory_output_bias = self._add("memory_output_bias", (units,), "bias")
        if self.input_feeding:
            self.input_feeding_kernel = self._add(
                "input_feeding_kernel", (units, width), "memory"
            )

    def _parametric_activations(self):
        """slot -> (activation, width it is applied to), parametric ones only."""
        widths = {
            "activation": self.units,
            "recurrent_activation": self.units,
            "feedback_activation": self.feedback_units,
            "output_activation": self.output_units,
        }
        return {
            slot: (getattr(self, slot), width)
            for slot, width in widths.items()
            if isinstance(getattr(self, slot), activations.ParametricActivation)
        }

    def _param_variables(self):
        """The cell's own weights by name (not its activations')."""
        owned = {
            id(v)
            for act, _ in self._parametric_activations().values()
            for v in act.weights
        }
        owned.update(id(v) for v in self.core_object.variables())
        return {v.name: v for v in self.weights if id(v) not in owned}

    @property
    def fused(self):
        """Whether the fused engine may run the cell (its core's ``fused``)."""
        return self.core_object.fused

    def step_work(self):
        """About the multiply-adds of one step per example: the cell's
        weights (each read once per position), times the positions of a
        map (``positions``); ``engine.choose`` reads it."""
        weights = sum(tf.TensorShape(v.shape).num_elements() for v in self.weights)
        return weights * self.positions

    # The positions a step's weights are applied at (the pixels of a map).
    positions = 1

    def position_shape(self, channels):
        """The shape of ``channels`` values at every position of a state, as
        the step math sees it: ``(channels,)``, or ``(height, width,
        channels)`` for maps (channels last)."""
        raise NotImplementedError

    def step_params(self, training=False, batch_size=None):
        """The parameters of the step math, as ``compute_dtype`` tensors.

        The cell's weights by name; a parametric activation's tensors under
        its slot (``"activation"``, ...), with, when ``training`` and
        ``batch_size`` are given, its training noise drawn from the cell's
        seed generator (one draw per row, or per pixel, for all steps).
        """
        dtype = self.compute_dtype
        params = {
            name: tf.cast(variable.value, dtype)
            for name, variable in self._param_variables().items()
        }
        for slot, (act, width) in self._parametric_activations().items():
            noise_shape = None
            if training and batch_size is not None:
                noise_shape = [batch_size, *self.position_shape(width)]
            params[slot] = act.step_params(dtype, noise_shape, self.seed_generator)
        core_variables = self.core_object.variables()
        if core_variables:
            params["core_variables"] = [tf.cast(v.value, dtype) for v in core_variables]
        return params

    def engine_params(self, training, batch_size):
        """``(params, per_example)`` of one call for the engine.

        ``params``: ``{"weights": step_params, "recurrent_mask": ...}`` (the
        recurrent dropout mask only when active). ``per_example``: the keys
        whose tensors have the batch on axis 0, which an engine may split
        with the batch; None when it must not split it (a parametric
        activation's training noise is per batch row, inside the weights).
        """
        params = {"weights": self.step_params(training, batch_size)}
        per_example = ()
        if training and self.recurrent_dropout:
            shape = [batch_size, *self.position_shape(self.units)]
            ones = tf.ones(shape, self.compute_dtype)
            params["recurrent_mask"] = keras.random.dropout(
                ones, self.recurrent_dropout, seed=self.seed_generator
            )
            per_example = ("recurrent_mask",)
        if training and self._parametric_activations():
            per_example = None
        return params, per_example

    def input_dropout(self, sequences, training):
        """``sequences`` with input dropout, one mask for every step."""
        if not (training and self.dropout):
            return sequences
        ones = tf.ones_like(sequences[:, :1])
        return sequences * keras.random.dropout(
            ones, self.dropout, seed=self.seed_generator
        )

    @property
    def feedback_weights(self):
        """The weights of the feedback part.

        ``W_c``, ``b_c``, ``U_c``, ``W_α``, ``b_α``, the input feeding
        kernel ``W_f`` (with memory attention) and the parameters of a
        learnable feedback activation.
        """
        weights = [
            v for n, v in self._param_variables().items() if n in FEEDBACK_PARAMS
        ]
        act = self.feedback_activation
        if isinstance(act, activations.ParametricActivation) and self.feedback_units:
            weights.extend(act.weights)
        return weights

    @property
    def feedforward_weights(self):
        """Every weight that is not in ``feedback_weights``."""
        feedback = {id(v) for v in self.feedback_weights}
        return [v for v in self.weights if id(v) not in feedback]

    # --- states -------------------------------------------------------------

    @property
    def state_names(self):
        """The names of the states, in order: the core's (``h``, ``carry``
        for lstm), ``c`` (with feedback), ``attentional`` (with input
        feeding)."""
        names = list(self.core_object.state_names)
        names += ["c"] if self.feedback_units else []
        return names + (["attentional"] if self.input_feeding else [])

    def states_from_engine(self, states):
        """Engine-layout states as the layer hands them out (``from_engine``
        of each, with its size)."""
        return [self.from_engine(s, n) for s, n in zip(states, self.spec.state_size)]

    # --- config -------------------------------------------------------------

    def cell_config(self):
        """The cell's own arguments (no base Layer arguments)."""
        names = self.SIZE_NAMES
        config = {
            names["units"]: self.units,
            names["feedback_units"]: self.feedback_units,
            "core": cores.serialize(self.core_object),
            "activation": _serialize_activation(self.activation),
            "recurrent_activation": _serialize_activation(self.recurrent_activation),
            "feedback_activation": _serialize_activation(self.feedback_activation),
            names["output_units"]: self.output_units,
            "output_activation": _serialize_activation(self.output_activation),
            "attention": self.attention,
            "residual": self.residual,
            "layer_norm": self.layer_norm,
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "memory_attention": self.memory_attention,
            "memory_units": self.memory_units,
            "input_feeding": self.input_feeding,
        }
        for group in KERNEL_GROUPS:
            for kind, _, serialize in _KINDS:
                value = getattr(self, f"{group}_{kind}")
                if group != "memory" or self.memory_attention is not None:
                    value = serialize(value)
                elif value is not None and not isinstance(value, (str, dict)):
                    value = serialize(value)
                config[f"{group}_{kind}"] = value
        if not self.SUPPORTS_MEMORY:
            for name in MEMORY_ARGS:
                del config[name]
        return config

    def get_config(self):
        return {**super().get_config(), **self.cell_config()}
