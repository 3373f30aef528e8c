"""``FeedbackCell`` and ``Feedback``: the feedback-recurrent cell and its layer.

The cell owns weights and config; its step math is
``keras_feedback.cells._feedback_math``; the engine owns time.
"""

import inspect

import keras
import tensorflow as tf

from keras_feedback import activations
from keras_feedback import engine as engines
from keras_feedback._api import public
from keras_feedback.cells import _feedback_math as math

# Weight groups: name -> (initializer/regularizer/constraint argument prefix).
_KERNEL_GROUPS = ("kernel", "recurrent", "feedback", "attention", "output", "bias")
# Which parameters are the feedback part (for staged training).
_FEEDBACK_PARAMS = (
    "feedback_recurrent_kernel",
    "feedback_kernel",
    "feedback_bias",
    "attention_kernel",
    "attention_bias",
)


def _check_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive" if minimum > 0 else "a non-negative"
        none = " or None" if allow_none else ""
        raise ValueError(
            f"Argument `{name}` must be {kind} integer{none}, got {value!r}"
        )
    return value


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


def _check_activations(cell):
    """Refuses activations the step math cannot keep pure, or that do nothing."""
    used = {
        "feedback_activation": bool(cell.feedback_units),
        "output_activation": bool(cell.output_units),
    }
    seen = {}
    for slot in math.ACTIVATION_SLOTS:
        act = getattr(cell, slot)
        if isinstance(act, keras.layers.Layer) and not isinstance(
            act, activations.ParametricActivation
        ):
            raise TypeError(
                f"Argument `{slot}` is a Keras layer ({act!r}); the cell's step "
                "cannot read layer weights. Use a keras_feedback.activations."
                "ParametricActivation (PReLU, Swish, Snake, Pade, APL, RReLU)."
            )
        if not isinstance(act, activations.ParametricActivation):
            continue
        if not used.get(slot, True):
            size = "feedback_units" if slot == "feedback_activation" else "output_units"
            raise ValueError(
                f"Argument `{slot}`={act!r} has no effect with "
                f"{size}={getattr(cell, size)!r}"
            )
        if id(act) in seen:
            raise ValueError(
                f"Arguments `{seen[id(act)]}` and `{slot}` got the same "
                f"activation instance {act!r}: pass a separate instance per "
                "argument (each builds its own parameters)"
            )
        seen[id(act)] = slot


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Argument `{name}` must be a float in [0, 1), got {value!r}")
    return float(value)


@public("keras_feedback.layers.FeedbackCell")
class FeedbackCell(keras.layers.Layer):
    """Cell of a feedback-recurrent network: one time step.

    Implements, for input ``x_t``, hidden state ``h_t`` (``units``) and
    feedback signal ``c_t`` (``feedback_units``):

        h_t = f(x_t, h_{t-1}, c_{t-1})        # core: simple, gru or lstm
        c_t = feedback_activation(W_c h_t + b_c)
        α_t = sigmoid(W_α [h_t; c_t] + b_α)   # if attention
        y_t = output_activation(W_y [α_t ⊙ h_t; c_t] + b_y)   # if output_units

    With ``feedback_units=0``, no attention and no output projection the cell
    is exactly Keras's ``SimpleRNNCell``, ``GRUCell`` (``reset_after=True``)
    or ``LSTMCell``: same weights in the same order, same outputs. The cell
    follows the Keras cell contract, so it also runs inside
    ``keras.layers.RNN`` and ``keras.layers.StackedRNNCells``; prefer the
    ``Feedback`` layer, which projects all inputs at once and uses the
    library's engines.

    Args:
        units: positive int, size of the hidden state ``h``.
        feedback_units: non-negative int, size of the feedback signal ``c``.
            Defaults to ``units``; ``0`` removes the feedback loop.
        core: ``"simple"`` (Elman), ``"gru"`` or ``"lstm"``.
        activation: activation of the core (candidate for gru/lstm).
            Default ``"tanh"``. Any name ``keras_feedback.activations.get``
            accepts, or a callable, or a learnable activation instance
            (``keras_feedback.activations.Pade("relu")``, ...: the cell
            builds its parameters for the width the activation is applied
            to, after its own weights).
        recurrent_activation: activation of the gru/lstm gates. Default
            ``"sigmoid"``.
        feedback_activation: activation ``σ`` of the feedback signal.
            Default ``"sigmoid"``.
        output_units: optional positive int; adds the output projection
            ``y_t = g(W_y [h̃_t; c_t] + b_y)``. None: ``y_t = h̃_t``.
        output_activation: ``g``, default linear.
        attention: bool, adds the gate ``α_t`` on ``h_t``.
        residual: bool, ``h_t = h_{t-1} + f(...)``.
        layer_norm: bool, normalises the core's new hidden state (before the
            residual sum) with a learnable scale and offset.
        use_bias: bool, whether the cell uses bias vectors.
        kernel_initializer, recurrent_initializer, feedback_initializer,
        attention_initializer, output_initializer, bias_initializer:
            initializers of the input kernel, recurrent kernel, feedback
            kernels (``W_c`` and ``U_c``), attention kernel, output kernel
            and of every bias.
        kernel_regularizer, ..., bias_regularizer: the same groups.
        kernel_constraint, ..., bias_constraint: the same groups.
        unit_forget_bias: bool, lstm only: adds 1 to the forget gate bias at
            initialisation (as Keras's ``LSTMCell``).
        dropout: float in [0, 1), dropout rate on the inputs.
        recurrent_dropout: float in [0, 1), dropout rate on ``h_{t-1}`` in
            the recurrent matmul.
        seed: int, seed of the dropout masks.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments:
        inputs: ``(batch, features)`` tensor, one time step.
        states: list of state tensors: ``h``, the lstm carry (lstm only),
            ``c`` (when ``feedback_units > 0``).
        training: bool, whether dropout is active.

    Returns:
        ``(output, new_states)``.

    Example:

    >>> import numpy as np
    >>> import keras_feedback
    >>> cell = keras_feedback.layers.FeedbackCell(4, feedback_units=2)
    >>> rnn = keras.layers.RNN(cell)
    >>> rnn(np.zeros((3, 5, 6), "float32")).shape
    TensorShape([3, 4])
    """

    def __init__(
        self,
        units,
        feedback_units=None,
        core="gru",
        activation="tanh",
        recurrent_activation="sigmoid",
        feedback_activation="sigmoid",
        output_units=None,
        output_activation=None,
        attention=False,
        residual=False,
        layer_norm=False,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        feedback_initializer="glorot_uniform",
        attention_initializer="glorot_uniform",
        output_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        feedback_regularizer=None,
        attention_regularizer=None,
        output_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        feedback_constraint=None,
        attention_constraint=None,
        output_constraint=None,
        bias_constraint=None,
        unit_forget_bias=True,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        _check_int("units", units, 1)
        if feedback_units is None:
            feedback_units = units
        _check_int("feedback_units", feedback_units, 0)
        _check_int("output_units", output_units, 1, allow_none=True)
        if core not in math.CORES:
            raise ValueError(
                f"Argument `core` must be one of {math.CORES}, got {core!r}"
            )
        dropout = _check_rate("dropout", dropout)
        recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        super().__init__(**kwargs)
        self.units = units
        self.feedback_units = feedback_units
        self.core = core
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.feedback_activation = activations.get(feedback_activation)
        self.output_units = output_units
        self.output_activation = activations.get(output_activation)
        self.attention = bool(attention)
        self.residual = bool(residual)
        self.layer_norm = bool(layer_norm)
        self.use_bias = bool(use_bias)
        local = locals()
        for group in _KERNEL_GROUPS:
            for kind, getter in (
                ("initializer", keras.initializers.get),
                ("regularizer", keras.regularizers.get),
                ("constraint", keras.constraints.get),
            ):
                setattr(self, f"{group}_{kind}", getter(local[f"{group}_{kind}"]))
        self.unit_forget_bias = bool(unit_forget_bias)
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        _check_activations(self)
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
        )
        self.state_size = self.spec.state_size
        self.output_size = self.spec.output_size
        self.input_spec = keras.InputSpec(min_ndim=2)

    def _add(self, name, shape, group, initializer=None):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer or getattr(self, f"{group}_initializer"),
            regularizer=getattr(self, f"{group}_regularizer"),
            constraint=getattr(self, f"{group}_constraint"),
        )

    def _bias_initializer(self):
        if self.core != "lstm" or not self.unit_forget_bias:
            return self.bias_initializer
        units, init = self.units, self.bias_initializer

        def initializer(shape, dtype=None):
            return keras.ops.concatenate(
                [
                    init((units,), dtype=dtype),
                    keras.initializers.get("ones")((units,), dtype=dtype),
                    init((2 * units,), dtype=dtype),
                ]
            )

        return initializer

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last (feature) dimension of the inputs must be defined, "
                f"got input shape {tuple(input_shape)}"
            )
        spec, units = self.spec, self.units
        width = spec.gates * units
        fb = self.feedback_units
        self.kernel = self._add("kernel", (features, width), "kernel")
        self.recurrent_kernel = self._add(
            "recurrent_kernel", (units, width), "recurrent"
        )
        if self.use_bias:
            shape = (2, width) if self.core == "gru" else (width,)
            self.bias = self._add("bias", shape, "bias", self._bias_initializer())
        if fb:
            self.feedback_recurrent_kernel = self._add(
                "feedback_recurrent_kernel", (fb, width), "feedback"
            )
            self.feedback_kernel = self._add("feedback_kernel", (units, fb), "feedback")
            if self.use_bias:
                self.feedback_bias = self._add("feedback_bias", (fb,), "bias")
        if self.attention:
            self.attention_kernel = self._add(
                "attention_kernel", (units + fb, units), "attention"
            )
            if self.use_bias:
                self.attention_bias = self._add("attention_bias", (units,), "bias")
        if self.output_units:
            self.output_kernel = self._add(
                "output_kernel", (units + fb, self.output_units), "output"
            )
            if self.use_bias:
                self.output_bias = self._add("output_bias", (self.output_units,), "bias")
        if self.layer_norm:
            self.layer_norm_gamma = self.add_weight(
                name="layer_norm_gamma", shape=(units,), initializer="ones"
            )
            self.layer_norm_beta = self.add_weight(
                name="layer_norm_beta", shape=(units,), initializer="zeros"
            )
        # A sub-layer's weights come after the cell's own in `weights`.
        for slot, (act, width) in self._parametric_activations().items():
            if not act.built:
                act.build((None, width))
            elif getattr(act, "per_unit", False) and act.units != width:
                raise ValueError(
                    f"Argument `{slot}`: {act!r} was built for {act.units} "
                    f"units, but the cell applies it to {width}"
                )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: features})

    # --- what the engine needs -------------------------------------------

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
        return {v.name: v for v in self.weights if id(v) not in owned}

    def step_params(self, training=False, batch_size=None):
        """The parameters of the step math, as ``compute_dtype`` tensors.

        The cell's weights by name; a parametric activation's tensors under
        its slot (``"activation"``, ...), with, when ``training`` and
        ``batch_size`` are given, its training noise drawn for
        ``(batch_size, width)`` from the cell's seed generator.
        """
        dtype = self.compute_dtype
        params = {
            name: tf.cast(variable.value, dtype)
            for name, variable in self._param_variables().items()
        }
        for slot, (act, width) in self._parametric_activations().items():
            noise_shape = None
            if training and batch_size is not None:
                noise_shape = [batch_size, width]
            params[slot] = act.step_params(dtype, noise_shape, self.seed_generator)
        return params

    @property
    def feedback_weights(self):
        """The weights of the feedback part.

        ``W_c``, ``b_c``, ``U_c``, ``W_α``, ``b_α`` and the parameters of a
        learnable feedback activation.
        """
        weights = [
            v for n, v in self._param_variables().items() if n in _FEEDBACK_PARAMS
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

    def input_dropout_mask(self, inputs, training):
        """A dropout mask of ``inputs``' shape, or None when inactive."""
        if not (training and self.dropout):
            return None
        ones = tf.ones_like(inputs)
        return keras.random.dropout(ones, self.dropout, seed=self.seed_generator)

    def recurrent_dropout_mask(self, batch_size, training):
        """A ``(batch, units)`` dropout mask for ``h_{t-1}``, or None."""
        if not (training and self.recurrent_dropout):
            return None
        ones = tf.ones([batch_size, self.units], self.compute_dtype)
        return keras.random.dropout(
            ones, self.recurrent_dropout, seed=self.seed_generator
        )

    # --- the Keras cell contract -----------------------------------------

    def call(self, inputs, states, training=False):
        states = tf.nest.flatten(states)
        params = self.step_params(training, tf.shape(inputs)[0])
        mask = self.input_dropout_mask(inputs, training)
        if mask is not None:
            inputs = inputs * mask
        projected = math.project_inputs(self.spec, params, inputs)
        recurrent_mask = self.recurrent_dropout_mask(tf.shape(inputs)[0], training)
        output, new_states, _ = math.step(
            self.spec, params, projected, states, recurrent_mask
        )
        return output, new_states

    def get_initial_state(self, batch_size=None):
        return [
            tf.zeros([batch_size, size], self.compute_dtype)
            for size in self.state_size
        ]

    def get_config(self):
        config = {
            "units": self.units,
            "feedback_units": self.feedback_units,
            "core": self.core,
            "activation": _serialize_activation(self.activation),
            "recurrent_activation": _serialize_activation(self.recurrent_activation),
            "feedback_activation": _serialize_activation(self.feedback_activation),
            "output_units": self.output_units,
            "output_activation": _serialize_activation(self.output_activation),
            "attention": self.attention,
            "residual": self.residual,
            "layer_norm": self.layer_norm,
            "use_bias": self.use_bias,
            "unit_forget_bias": self.unit_forget_bias,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        for group in _KERNEL_GROUPS:
            for kind, serialize in (
                ("initializer", keras.initializers.serialize),
                ("regularizer", keras.regularizers.serialize),
                ("constraint", keras.constraints.serialize),
            ):
                config[f"{group}_{kind}"] = serialize(getattr(self, f"{group}_{kind}"))
        return {**super().get_config(), **config}


_CELL_ARGS = tuple(inspect.signature(FeedbackCell.__init__).parameters)[1:-1]
_BASE_CONFIG_KEYS = ("name", "trainable", "dtype")


@public("keras_feedback.layers.Feedback")
class Feedback(keras.layers.Layer):
    """Feedback-recurrent sequence layer.

    Runs a ``FeedbackCell`` over the time axis with one of the library's
    recurrence engines. The inputs of all steps are projected at once, before
    the loop. With ``feedback_units=0`` (and no attention or output
    projection) it computes exactly what ``keras.layers.SimpleRNN``, ``GRU``
    or ``LSTM`` compute, with the same weights.

    Args:
        units: positive int, size of the hidden state.
        return_sequences: bool, return the output of every step
            ``(batch, time, output_size)`` or only the last one.
        return_state: bool, also return the final states (``h``, the lstm
            carry, ``c``).
        go_backwards: bool, process the sequence backwards (outputs are
            returned in processing order, as in Keras).
        stateful: bool, the final states of a batch are the initial states of
            the next one; needs a fixed batch size. ``reset_state()`` zeroes
            them, ``reset_state(states)`` sets them.
        unroll: bool, unroll the loop (static time dimension only).
        return_trace: bool, also return a dict of the per-step ``"h"``,
            ``"c"`` (with feedback) and ``"alpha"`` (with attention)
            sequences, each ``(batch, time, size)``.
        zero_output_for_mask: bool, masked steps output zeros instead of the
            previous output (``Bidirectional`` sets it).
        engine: ``"auto"`` (default: ``"xla"``, or ``"reference"`` with
            ``unroll=True``), ``"xla"`` (XLA-compiled forward and backward
            loops) or ``"reference"`` (a plain ``tf.while_loop``).
        **kwargs: every argument of ``keras_feedback.layers.FeedbackCell``
            (``feedback_units``, ``core``, activations, ``attention``,
            ``residual``, initializers, dropout, ...) and the base Layer
            arguments.

    Call arguments:
        sequences: ``(batch, time, features)`` tensor.
        initial_state: optional list of initial state tensors.
        mask: optional ``(batch, time)`` boolean tensor; a masked step keeps
            the previous states and output.
        training: bool, whether dropout is active.

    Returns:
        The output; with ``return_state``, ``(output, *states)``; with
        ``return_trace`` the trace dict is appended last.

    Example:

    >>> import numpy as np
    >>> import keras_feedback
    >>> layer = keras_feedback.layers.Feedback(
    ...     8, feedback_units=4, core="lstm", attention=True)
    >>> layer(np.zeros((2, 10, 3), "float32")).shape
    TensorShape([2, 8])

    Reference:
        Zamir et al., "Feedback Networks", CVPR 2017.
    """

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        return_trace=False,
        zero_output_for_mask=False,
        engine="auto",
        **kwargs,
    ):
        cell_kwargs = {k: kwargs.pop(k) for k in _CELL_ARGS if k in kwargs}
        if engine not in engines.ENGINE_NAMES:
            raise ValueError(
                f"Argument `engine` must be one of {engines.ENGINE_NAMES}, "
                f"got {engine!r}"
            )
        super().__init__(**kwargs)
        self.cell = FeedbackCell(
            units, name="feedback_cell", dtype=self.dtype_policy, **cell_kwargs
        )
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.return_trace = bool(return_trace)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.engine = engine
        self.supports_masking = True
        self.input_spec = keras.InputSpec(ndim=3)
        object.__setattr__(self, "_state_variables", None)

    # Read-only views of the cell's configuration.
    units = property(lambda self: self.cell.units)
    feedback_units = property(lambda self: self.cell.feedback_units)
    core = property(lambda self: self.cell.core)
    state_size = property(lambda self: self.cell.state_size)
    output_size = property(lambda self: self.cell.output_size)
    feedback_weights = property(lambda self: self.cell.feedback_weights)
    feedforward_weights = property(lambda self: self.cell.feedforward_weights)

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(
                "Feedback expects inputs of rank 3 (batch, time, features), "
                f"got shape {tuple(sequences_shape)}"
            )
        self.cell.build((sequences_shape[0], sequences_shape[-1]))
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: sequences_shape[-1]})
        if self.stateful:
            batch = sequences_shape[0]
            if batch is None:
                raise ValueError(
                    "A stateful Feedback layer needs a fixed batch size: pass "
                    "`batch_shape=(batch, time, features)` to `keras.Input` (or "
                    "`batch_size` to the input), got input shape "
                    f"{tuple(sequences_shape)}"
                )
            # Not tracked as weights (as in Keras's RNN): the states are not
            # part of the model's parameters, get_weights or checkpoints.
            variables = [
                keras.Variable(
                    tf.zeros((batch, size)),
                    trainable=False,
                    dtype=self.variable_dtype,
                    name=f"state_{i}",
                )
                for i, size in enumerate(self.state_size)
            ]
            object.__setattr__(self, "_state_variables", variables)

    @property
    def states(self):
        """The state variables of a stateful layer (None otherwise)."""
        return self._state_variables

    def reset_state(self, states=None):
        """Zeroes the states of a stateful layer, or sets them to ``states``."""
        if not self.stateful:
            raise ValueError("reset_state() needs a layer built with stateful=True")
        if self._state_variables is None:
            raise ValueError("reset_state() needs a built layer: call it once first")
        if states is None:
            for variable in self._state_variables:
                variable.assign(tf.zeros_like(variable))
            return
        states = self._check_states(
            states, self._state_variables[0].shape[0], "states"
        )
        for variable, value in zip(self._state_variables, states):
            variable.assign(tf.cast(value, variable.dtype))

    reset_states = reset_state

    def _check_states(self, states, batch, argument):
        states = tf.nest.flatten(states)
        if len(states) != len(self.state_size):
            raise ValueError(
                f"Argument `{argument}` must hold {len(self.state_size)} tensors "
                f"of sizes {self.state_size} (h, {'carry, ' if self.core == 'lstm' else ''}"
                f"{'c' if self.feedback_units else ''}), got {len(states)}"
            )
        checked = []
        for i, (state, size) in enumerate(zip(states, self.state_size)):
            state = tf.convert_to_tensor(state)
            shape = state.shape
            if (
                shape.rank != 2
                or shape[-1] != size
                or (batch is not None and shape[0] is not None and shape[0] != batch)
            ):
                raise ValueError(
                    f"Argument `{argument}`[{i}] must have shape "
                    f"({batch}, {size}), got {tuple(shape)}"
                )
            checked.append(tf.cast(state, self.compute_dtype))
        return checked

    def call(self, sequences, initial_state=None, mask=None, training=False):
        cell = self.cell
        sequences = tf.convert_to_tensor(sequences)
        batch = tf.shape(sequences)[0]
        if self.stateful:
            if initial_state is not None:
                raise ValueError(
                    "A stateful layer takes its initial state from its state "
                    "variables: use reset_state(states) instead of `initial_state`"
                )
            states = [tf.cast(v.value, self.compute_dtype) for v in self._state_variables]
        elif initial_state is None:
            states = cell.get_initial_state(batch)
        else:
            states = self._check_states(
                initial_state, sequences.shape[0], "initial_state"
            )
        params = cell.step_params(training, batch)
        dropout_mask = cell.input_dropout_mask(sequences[:, :1], training)
        if dropout_mask is not None:
            sequences = sequences * dropout_mask
        engine_params = {"weights": params}
        recurrent_mask = cell.recurrent_dropout_mask(batch, training)
        # The params with a batch axis, which the engine may split with the
        # batch: the recurrent dropout mask. A parametric activation's
        # training noise (per batch row, inside the weights) is not declared,
        # so such a layer keeps the batch in one loop when training.
        per_example = ()
        if recurrent_mask is not None:
            engine_params["recurrent_mask"] = recurrent_mask
            per_example = ("recurrent_mask",)
        if training and cell._parametric_activations():
            per_example = None
        outputs, last_output, final_states, traces = engines.get(self.engine)(
            math.make_step_fn(cell.spec, add_input_bias=True),
            engine_params,
            sequences,
            states,
            output_size=cell.output_size,
            mask=mask,
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            zero_output_for_mask=self.zero_output_for_mask,
            unroll=self.unroll,
            trace_sizes=cell.spec.trace_sizes if self.return_trace else None,
            per_example=per_example,
            project=math.make_project_fn(cell.spec),
        )
        if self.stateful:
            for variable, value in zip(self._state_variables, final_states):
                variable.assign(tf.cast(value, variable.dtype))
        result = [outputs if self.return_sequences else last_output]
        if self.return_state:
            result.extend(final_states)
        if self.return_trace:
            result.append(traces)
        return result[0] if len(result) == 1 else tuple(result)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, time = sequences_shape[0], sequences_shape[1]
        size = self.output_size
        shapes = [(batch, time, size) if self.return_sequences else (batch, size)]
        if self.return_state:
            shapes.extend((batch, s) for s in self.state_size)
        if self.return_trace:
            sizes = self.cell.spec.trace_sizes
            shapes.append({k: (batch, time, n) for k, n in sizes.items()})
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_mask(self, sequences, mask=None):
        output_mask = mask if self.return_sequences else None
        masks = [output_mask]
        if self.return_state:
            masks.extend(None for _ in self.state_size)
        if self.return_trace:
            masks.append({k: None for k in self.cell.spec.trace_sizes})
        return masks[0] if len(masks) == 1 else tuple(masks)

    def get_config(self):
        cell_config = {
            k: v
            for k, v in self.cell.get_config().items()
            if k not in _BASE_CONFIG_KEYS
        }
        config = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "return_trace": self.return_trace,
            "zero_output_for_mask": self.zero_output_for_mask,
            "engine": self.engine,
        }
        return {**super().get_config(), **cell_config, **config}
