"""``ConvFeedback2D``: the feedback-recurrent layer with convolutions.

The layer owns the weights and the Keras plumbing; its step math is
``keras_feedback.cells._conv_feedback_math`` (the feedback cell's step with
convolution kernels); the engine owns time.
"""

import keras
import tensorflow as tf

from keras_feedback import activations
from keras_feedback import engine as engines
from keras_feedback._api import public
from keras_feedback.cells import _conv_feedback_math as conv_math
from keras_feedback.cells import _feedback_math as math
from keras_feedback.layers._feedback import _FEEDBACK_PARAMS
from keras_feedback.layers._feedback import _KERNEL_GROUPS
from keras_feedback.layers._feedback import _check_activations
from keras_feedback.layers._feedback import _check_int
from keras_feedback.layers._feedback import _check_rate
from keras_feedback.layers._feedback import _serialize_activation
from keras_feedback.layers._feedback import _step_form

_DATA_FORMATS = ("channels_last", "channels_first")


def _pair(name, value):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or min(value) < 1
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive integer or a tuple of 2 "
            f"positive integers, got {value!r}"
        )
    return tuple(value)


@public("keras_feedback.layers.ConvFeedback2D")
class ConvFeedback2D(keras.layers.Layer):
    """Convolutional feedback-recurrent layer over sequences of images.

    The feedback cell of ``keras_feedback.layers.Feedback`` with
    convolutions in place of matmuls, for input maps ``x_t``, hidden maps
    ``h_t`` (``filters`` channels) and feedback maps ``c_t``
    (``feedback_filters`` channels):

        h_t = f(conv(x_t, W_x), conv(h_{t-1}, U_h), conv(c_{t-1}, U_c))
        c_t = feedback_activation(conv(h_t, W_c) + b_c)
        α_t = sigmoid(conv1x1([h_t; c_t], W_α) + b_α)        # if attention
        y_t = output_activation(conv1x1([α_t ⊙ h_t; c_t], W_y) + b_y)

    The input convolution uses ``kernel_size``, ``strides``, ``padding`` and
    ``dilation_rate`` and runs on every time step at once, before the loop;
    the recurrent, feedback (``U_c``, ``W_c``) convolutions use
    ``kernel_size`` with stride 1 and ``"same"`` padding; the attention gate
    and the output readout are per pixel (1x1). With ``feedback_filters=0``
    (no attention, no output projection) and ``core="lstm"`` the layer
    computes exactly what ``keras.layers.ConvLSTM2D`` computes, with the
    same weights in the same order.

    Args:
        filters: positive int, channels of the hidden maps ``h``.
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints, strides of the input convolution.
        padding: ``"valid"`` or ``"same"``, padding of the input
            convolution.
        data_format: ``"channels_last"`` (inputs ``(batch, time, height,
            width, channels)``) or ``"channels_first"`` (``(batch, time,
            channels, height, width)``); default
            ``keras.config.image_data_format()``. States and outputs follow
            it.
        dilation_rate: int or tuple of 2 ints, of the input convolution.
        feedback_filters: non-negative int, channels of the feedback maps
            ``c``. Defaults to ``filters``; ``0`` removes the feedback loop.
        core: ``"simple"``, ``"gru"`` or ``"lstm"``.
        activation, recurrent_activation, feedback_activation,
        output_activation: as in ``keras_feedback.layers.FeedbackCell``,
            learnable ``keras_feedback.activations.ParametricActivation``
            included (per-unit parameters follow the channels).
        output_filters: optional positive int, adds the 1x1 output readout.
        attention: bool, adds the per-pixel gate ``α_t``.
        residual: bool, ``h_t = h_{t-1} + f(...)``.
        layer_norm: bool, normalises each pixel's new hidden channels.
        use_bias: bool.
        kernel_initializer, ..., bias_constraint: the weight groups of
            ``FeedbackCell`` (``kernel``, ``recurrent``, ``feedback``,
            ``attention``, ``output``, ``bias``).
        unit_forget_bias: bool, lstm only: forget-gate bias starts at 1.
        dropout: float in [0, 1), on the inputs (one mask for all steps).
        recurrent_dropout: float in [0, 1), on ``h_{t-1}`` in the recurrent
            convolution.
        seed: int, seed of the dropout masks.
        return_sequences: bool, every step's output or only the last.
        return_state: bool, also return the final states (``h``, the lstm
            carry, ``c``), as maps.
        go_backwards: bool, process time in reverse.
        unroll: bool, unroll the loop (static time only).
        return_trace: bool, also return a dict of the per-step ``"h"``,
            ``"c"`` and ``"alpha"`` maps, each ``(batch, time, ...)``.
        zero_output_for_mask: bool, masked steps output zeros.
        engine: ``"auto"``, ``"xla"`` or ``"reference"``.
        **kwargs: base Layer arguments.

    Call arguments:
        sequences: ``(batch, time, height, width, channels)`` tensor (or
            channels first); height, width and channels must be static.
        initial_state: optional list of initial state maps.
        mask: optional ``(batch, time)`` boolean tensor.
        training: bool, whether dropout is active.

    Returns:
        The output maps; with ``return_state``, ``(output, *states)``; with
        ``return_trace`` the trace dict is appended last.

    Example:

    >>> import numpy as np
    >>> import keras_feedback
    >>> layer = keras_feedback.layers.ConvFeedback2D(
    ...     4, 3, padding="same", feedback_filters=2, core="lstm")
    >>> layer(np.zeros((2, 5, 8, 8, 1), "float32")).shape
    TensorShape([2, 8, 8, 4])

    Reference:
        Zamir et al., "Feedback Networks", CVPR 2017.
        Shi et al., "Convolutional LSTM Network", NeurIPS 2015.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        feedback_filters=None,
        core="gru",
        activation="tanh",
        recurrent_activation="sigmoid",
        feedback_activation="sigmoid",
        output_filters=None,
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
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        unroll=False,
        return_trace=False,
        zero_output_for_mask=False,
        engine="auto",
        **kwargs,
    ):
        _check_int("filters", filters, 1)
        if feedback_filters is None:
            feedback_filters = filters
        _check_int("feedback_filters", feedback_filters, 0)
        _check_int("output_filters", output_filters, 1, allow_none=True)
        kernel_size = _pair("kernel_size", kernel_size)
        strides = _pair("strides", strides)
        dilation_rate = _pair("dilation_rate", dilation_rate)
        if max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError(
                "Arguments `strides` and `dilation_rate` cannot both exceed 1, "
                f"got strides={strides} and dilation_rate={dilation_rate}"
            )
        padding = padding.lower() if isinstance(padding, str) else padding
        if padding not in conv_math.PADDINGS:
            raise ValueError(
                f"Argument `padding` must be one of {conv_math.PADDINGS}, "
                f"got {padding!r}"
            )
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in _DATA_FORMATS:
            raise ValueError(
                f"Argument `data_format` must be one of {_DATA_FORMATS}, got "
                f"{data_format!r}"
            )
        if core not in math.CORES:
            raise ValueError(
                f"Argument `core` must be one of {math.CORES}, got {core!r}"
            )
        if engine not in engines.ENGINE_NAMES:
            raise ValueError(
                f"Argument `engine` must be one of {engines.ENGINE_NAMES}, "
                f"got {engine!r}"
            )
        dropout = _check_rate("dropout", dropout)
        recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.data_format = data_format
        self.dilation_rate = dilation_rate
        self.feedback_filters = feedback_filters
        self.core = core
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.feedback_activation = activations.get(feedback_activation)
        self.output_filters = output_filters
        self.output_activation = activations.get(output_activation)
        self.attention = bool(attention)
        self.residual = bool(residual)
        self.layer_norm = bool(layer_norm)
        self.use_bias = bool(use_bias)
        _check_activations(self)
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
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)
        self.return_trace = bool(return_trace)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.engine = engine
        self.cell_spec = math.StepSpec(
            core=core,
            units=filters,
            feedback_units=feedback_filters,
            output_units=output_filters,
            attention=self.attention,
            residual=self.residual,
            layer_norm=self.layer_norm,
            use_bias=self.use_bias,
            activation=_step_form(self.activation),
            recurrent_activation=_step_form(self.recurrent_activation),
            feedback_activation=_step_form(self.feedback_activation),
            output_activation=_step_form(self.output_activation),
        )
        self.spec = None  # the ConvStepSpec, once the input size is known
        self.supports_masking = True
        self.input_spec = keras.InputSpec(ndim=5)

    # --- shapes ---------------------------------------------------------------

    def _channels_last(self, shape):
        """``(batch, time, h, w, c)`` of an input shape in ``data_format``."""
        shape = tuple(shape)
        if self.data_format == "channels_first":
            return shape[:2] + shape[3:] + shape[2:3]
        return shape

    def _to_format(self, maps):
        """Channels-last maps ``(..., h, w, c)`` in ``data_format``."""
        if self.data_format == "channels_last":
            return maps
        rank = maps.shape.rank
        return tf.transpose(maps, [*range(rank - 3), rank - 1, rank - 3, rank - 2])

    def _from_format(self, maps):
        if self.data_format == "channels_last":
            return maps
        rank = maps.shape.rank
        return tf.transpose(maps, [*range(rank - 3), rank - 2, rank - 1, rank - 3])

    def _map_shape(self, lead, channels):
        height, width = self.spec.height, self.spec.width
        if self.data_format == "channels_first":
            return tuple(lead) + (channels, height, width)
        return tuple(lead) + (height, width, channels)

    # The cell's sizes under the names of ``FeedbackCell``.
    units = property(lambda self: self.filters)
    feedback_units = property(lambda self: self.feedback_filters)
    output_units = property(lambda self: self.output_filters)

    @property
    def state_size(self):
        """Channels of the state maps: h, (lstm carry), (feedback c)."""
        return self.cell_spec.state_size

    def _spec_for(self, input_shape):
        _, _, height, width, channels = self._channels_last(input_shape)
        if height is None or width is None or channels is None:
            raise ValueError(
                "ConvFeedback2D needs static height, width and channels, got "
                f"input shape {tuple(input_shape)} ({self.data_format})"
            )
        size = [
            conv_math.conv_output_length(
                n,
                self.kernel_size[i],
                self.strides[i],
                self.dilation_rate[i],
                self.padding,
            )
            for i, n in enumerate((height, width))
        ]
        if min(size) < 1:
            raise ValueError(
                f"ConvFeedback2D: a {self.kernel_size} kernel with padding "
                f"{self.padding!r} and dilation {self.dilation_rate} leaves no "
                f"output pixels of input {height}x{width}; got input shape "
                f"{tuple(input_shape)}"
            )
        return conv_math.ConvStepSpec(
            cell=self.cell_spec,
            height=size[0],
            width=size[1],
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )

    # --- weights ------------------------------------------------------------

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
        filters, init = self.filters, self.bias_initializer

        def initializer(shape, dtype=None):
            return keras.ops.concatenate(
                [
                    init((filters,), dtype=dtype),
                    keras.initializers.get("ones")((filters,), dtype=dtype),
                    init((2 * filters,), dtype=dtype),
                ]
            )

        return initializer

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 5:
            raise ValueError(
                "ConvFeedback2D expects inputs of rank 5 (batch, time, height, "
                f"width, channels), got shape {tuple(sequences_shape)}"
            )
        self.spec = self._spec_for(sequences_shape)
        channels = self._channels_last(sequences_shape)[-1]
        kh, kw = self.kernel_size
        filters, fb = self.filters, self.feedback_filters
        width = self.cell_spec.gates * filters
        self.kernel = self._add("kernel", (kh, kw, channels, width), "kernel")
        self.recurrent_kernel = self._add(
            "recurrent_kernel", (kh, kw, filters, width), "recurrent"
        )
        if self.use_bias:
            shape = (2, width) if self.core == "gru" else (width,)
            self.bias = self._add("bias", shape, "bias", self._bias_initializer())
        if fb:
            self.feedback_recurrent_kernel = self._add(
                "feedback_recurrent_kernel", (kh, kw, fb, width), "feedback"
            )
            self.feedback_kernel = self._add(
                "feedback_kernel", (kh, kw, filters, fb), "feedback"
            )
            if self.use_bias:
                self.feedback_bias = self._add("feedback_bias", (fb,), "bias")
        if self.attention:
            self.attention_kernel = self._add(
                "attention_kernel", (1, 1, filters + fb, filters), "attention"
            )
            if self.use_bias:
                self.attention_bias = self._add("attention_bias", (filters,), "bias")
        if self.output_filters:
            self.output_kernel = self._add(
                "output_kernel", (1, 1, filters + fb, self.output_filters), "output"
            )
            if self.use_bias:
                self.output_bias = self._add(
                    "output_bias", (self.output_filters,), "bias"
                )
        if self.layer_norm:
            self.layer_norm_gamma = self.add_weight(
                name="layer_norm_gamma", shape=(filters,), initializer="ones"
            )
            self.layer_norm_beta = self.add_weight(
                name="layer_norm_beta", shape=(filters,), initializer="zeros"
            )
        # A sub-layer's weights come after the layer's own in `weights`.
        for slot, (act, width) in self._parametric_activations().items():
            if not act.built:
                act.build((None, width))
            elif getattr(act, "per_unit", False) and act.units != width:
                raise ValueError(
                    f"Argument `{slot}`: {act!r} was built for {act.units} "
                    f"units, but the layer applies it to {width} channels"
                )
        self.input_spec = keras.InputSpec(
            ndim=5, axes={i: d for i, d in enumerate(sequences_shape) if i > 1}
        )

    def _parametric_activations(self):
        """slot -> (activation, channels it is applied to), parametric only."""
        widths = {
            "activation": self.filters,
            "recurrent_activation": self.filters,
            "feedback_activation": self.feedback_filters,
            "output_activation": self.output_filters,
        }
        return {
            slot: (getattr(self, slot), width)
            for slot, width in widths.items()
            if isinstance(getattr(self, slot), activations.ParametricActivation)
        }

    def _param_variables(self):
        """The layer's own weights by name (not its activations')."""
        owned = {
            id(v)
            for act, _ in self._parametric_activations().values()
            for v in act.weights
        }
        return {v.name: v for v in self.weights if id(v) not in owned}

    def step_params(self, training=False, batch_size=None):
        """The parameters of the step math, as ``compute_dtype`` tensors.

        The layer's weights by name, and a parametric activation's tensors
        under its slot, with its training noise (one draw per pixel for all
        steps) when ``training`` and ``batch_size`` are given.
        """
        dtype = self.compute_dtype
        params = {
            name: tf.cast(variable.value, dtype)
            for name, variable in self._param_variables().items()
        }
        for slot, (act, width) in self._parametric_activations().items():
            noise_shape = None
            if training and batch_size is not None:
                noise_shape = [batch_size, self.spec.height, self.spec.width, width]
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
        if isinstance(act, activations.ParametricActivation) and self.feedback_filters:
            weights.extend(act.weights)
        return weights

    @property
    def feedforward_weights(self):
        """Every weight that is not in ``feedback_weights``."""
        feedback = {id(v) for v in self.feedback_weights}
        return [v for v in self.weights if id(v) not in feedback]

    # --- call -----------------------------------------------------------------

    def _initial_states(self, initial_state, batch):
        spec = self.spec
        if initial_state is None:
            return [
                tf.zeros([batch, size], self.compute_dtype) for size in spec.state_size
            ]
        states = tf.nest.flatten(initial_state)
        names = "h" + (", carry" if self.core == "lstm" else "")
        names += ", c" if self.feedback_filters else ""
        if len(states) != len(spec.state_size):
            raise ValueError(
                f"Argument `initial_state` must hold {len(spec.state_size)} maps "
                f"({names}), got {len(states)}"
            )
        flat = []
        for i, (state, channels) in enumerate(zip(states, spec.state_channels)):
            state = tf.convert_to_tensor(state)
            expected = self._map_shape((None,), channels)
            if state.shape.rank != 4 or tuple(state.shape[1:]) != expected[1:]:
                raise ValueError(
                    f"Argument `initial_state`[{i}] must have shape {expected}, "
                    f"got {tuple(state.shape)}"
                )
            state = self._from_format(tf.cast(state, self.compute_dtype))
            flat.append(conv_math.to_flat(state))
        return flat

    def call(self, sequences, initial_state=None, mask=None, training=False):
        spec = self.spec
        sequences = self._from_format(tf.convert_to_tensor(sequences))
        batch = tf.shape(sequences)[0]
        states = self._initial_states(initial_state, batch)
        params = self.step_params(training, batch)
        if training and self.dropout:
            sequences = sequences * keras.random.dropout(
                tf.ones_like(sequences[:, :1]), self.dropout, seed=self.seed_generator
            )
        projected = conv_math.to_flat(conv_math.project_inputs(spec, params, sequences))
        engine_params = {"weights": params}
        if training and self.recurrent_dropout:
            ones = tf.ones(
                [batch, spec.height, spec.width, self.filters], self.compute_dtype
            )
            engine_params["recurrent_mask"] = keras.random.dropout(
                ones, self.recurrent_dropout, seed=self.seed_generator
            )
        outputs, last_output, final_states, traces = engines.get(self.engine)(
            conv_math.make_step_fn(spec),
            engine_params,
            projected,
            states,
            output_size=spec.output_size,
            mask=mask,
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            zero_output_for_mask=self.zero_output_for_mask,
            unroll=self.unroll,
            trace_sizes=spec.trace_sizes if self.return_trace else None,
        )

        def maps(flat, channels):
            shape = [spec.height, spec.width, channels]
            lead = tf.shape(flat)[:-1]
            return self._to_format(tf.reshape(flat, tf.concat([lead, shape], 0)))

        if self.return_sequences:
            result = [maps(outputs, spec.output_channels)]
        else:
            result = [maps(last_output, spec.output_channels)]
        if self.return_state:
            result.extend(maps(s, n) for s, n in zip(final_states, spec.state_channels))
        if self.return_trace:
            result.append(
                {k: maps(traces[k], n) for k, n in spec.trace_channels.items()}
            )
        return result[0] if len(result) == 1 else tuple(result)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        if self.spec is None:
            self.spec = self._spec_for(sequences_shape)
        batch, time = sequences_shape[0], sequences_shape[1]
        lead = (batch, time) if self.return_sequences else (batch,)
        shapes = [self._map_shape(lead, self.spec.output_channels)]
        if self.return_state:
            shapes.extend(self._map_shape((batch,), n) for n in self.state_size)
        if self.return_trace:
            shapes.append(
                {
                    k: self._map_shape((batch, time), n)
                    for k, n in self.spec.trace_channels.items()
                }
            )
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_mask(self, sequences, mask=None):
        masks = [mask if self.return_sequences else None]
        if self.return_state:
            masks.extend(None for _ in self.state_size)
        if self.return_trace:
            masks.append({k: None for k in self.cell_spec.trace_sizes})
        return masks[0] if len(masks) == 1 else tuple(masks)

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "feedback_filters": self.feedback_filters,
            "core": self.core,
            "activation": _serialize_activation(self.activation),
            "recurrent_activation": _serialize_activation(self.recurrent_activation),
            "feedback_activation": _serialize_activation(self.feedback_activation),
            "output_filters": self.output_filters,
            "output_activation": _serialize_activation(self.output_activation),
            "attention": self.attention,
            "residual": self.residual,
            "layer_norm": self.layer_norm,
            "use_bias": self.use_bias,
            "unit_forget_bias": self.unit_forget_bias,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "unroll": self.unroll,
            "return_trace": self.return_trace,
            "zero_output_for_mask": self.zero_output_for_mask,
            "engine": self.engine,
        }
        for group in _KERNEL_GROUPS:
            for kind, serialize in (
                ("initializer", keras.initializers.serialize),
                ("regularizer", keras.regularizers.serialize),
                ("constraint", keras.constraints.serialize),
            ):
                config[f"{group}_{kind}"] = serialize(getattr(self, f"{group}_{kind}"))
        return {**super().get_config(), **config}
