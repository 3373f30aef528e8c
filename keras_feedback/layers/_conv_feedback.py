"""``ConvFeedback2D``: the feedback-recurrent layer with convolutions.

``ConvFeedbackCell`` is the feedback cell with convolution kernels (its step
math is ``keras_feedback.cells._conv_feedback_math``, the dense cell's step
on maps); ``ConvFeedback2D`` is the recurrent base (``FeedbackRNN``) with that
cell, as Keras pairs ``ConvLSTMCell`` with ``ConvLSTM2D``. The engines carry
flattened maps; the cell converts at the boundary.
"""

from typing import Any
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.cells import _conv_feedback_math as conv_math
from keras_feedback.cells import _feedback_math as math
from keras_feedback.layers._cell import ActivationLike
from keras_feedback.layers._cell import ConstraintLike
from keras_feedback.layers._cell import CoreLike
from keras_feedback.layers._cell import FeedbackCellBase
from keras_feedback.layers._cell import InitializerLike
from keras_feedback.layers._cell import RegularizerLike
from keras_feedback.layers._recurrent import FeedbackRNN

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


class ConvFeedbackCell(FeedbackCellBase):
    """The feedback cell with convolutions: one step on feature maps.

    Internal to ``ConvFeedback2D``, which documents the arguments: those of
    ``FeedbackCell`` (``filters``, ``feedback_filters`` and
    ``output_filters`` for its sizes) and of the input convolution.
    """

    SIZE_NAMES = {
        "units": "filters",
        "feedback_units": "feedback_filters",
        "output_units": "output_filters",
    }
    input_rank = 5
    input_layout = "(batch, time, height, width, channels)"

    def __init__(
        self,
        filters: int,
        kernel_size: Union[int, Tuple[int, int]],
        strides: Union[int, Tuple[int, int]] = 1,
        padding: str = "valid",
        data_format: Optional[str] = None,
        dilation_rate: Union[int, Tuple[int, int]] = 1,
        feedback_filters: Optional[int] = None,
        output_filters: Optional[int] = None,
        **kwargs,
    ):
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
        super().__init__(
            filters,
            feedback_units=feedback_filters,
            output_units=output_filters,
            **kwargs,
        )
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.data_format = data_format
        self.dilation_rate = dilation_rate
        self.conv_spec = None  # the ConvStepSpec, once the input size is known
        self.state_size = self.spec.state_size
        self.output_size = self.spec.output_size

    # --- layouts --------------------------------------------------------------

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

    def _map_shape(self, spec, lead, channels):
        if self.data_format == "channels_first":
            return tuple(lead) + (channels, spec.height, spec.width)
        return tuple(lead) + (spec.height, spec.width, channels)

    def spec_for(self, input_shape):
        """The ``ConvStepSpec`` for inputs of ``input_shape``."""
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
            cell=self.spec,
            height=size[0],
            width=size[1],
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )

    # --- weights ----------------------------------------------------------------

    def kernel_shape(self, inputs, outputs, pointwise=False):
        kh, kw = (1, 1) if pointwise else self.kernel_size
        return (kh, kw, inputs, outputs)

    def position_shape(self, channels):
        return (self.conv_spec.height, self.conv_spec.width, channels)

    def build(self, input_shape):
        self.conv_spec = self.spec_for(input_shape)
        self.build_weights(self._channels_last(input_shape)[-1])
        self.step_shape = tuple(input_shape)[2:]

    # --- what the layer and the engine need ------------------------------------

    @property
    def state_shapes(self):
        """The shape of each state map without the batch, in ``data_format``."""
        return [self._map_shape(self.conv_spec, (), n) for n in self.spec.state_size]

    @property
    def engine_state_sizes(self):
        return list(self.conv_spec.state_size)

    def recurrence(self):
        """The ``Recurrence`` the engine runs, on flattened maps; the input
        convolution runs before (``engine_inputs``)."""
        return conv_math.make_recurrence(self.conv_spec)

    def engine_inputs(self, params, sequences):
        maps = self._from_format(sequences)
        projected = conv_math.project_inputs(self.conv_spec, params["weights"], maps)
        return conv_math.to_flat(projected)

    def to_engine(self, tensor):
        return conv_math.to_flat(self._from_format(tensor))

    def from_engine(self, tensor, channels):
        spec = self.conv_spec
        lead = tf.shape(tensor)[:-1]
        shape = tf.concat([lead, [spec.height, spec.width, channels]], 0)
        return self._to_format(tf.reshape(tensor, shape))

    def output_shape(self, input_shape, lead, channels):
        spec = self.conv_spec or self.spec_for(input_shape)
        return self._map_shape(spec, lead, channels)

    def readout(self, params, states):
        spec = self.conv_spec
        maps = [
            conv_math.to_maps(spec, s, n) for s, n in zip(states, spec.state_channels)
        ]
        return conv_math.to_flat(math.readout(self.spec, params["weights"], maps))

    @property
    def positions(self):
        return self.conv_spec.pixels if self.conv_spec is not None else 1

    def cell_config(self):
        return {
            **super().cell_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }


@public("keras_feedback.layers.ConvFeedback2D")
class ConvFeedback2D(FeedbackRNN):
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
        core: ``"simple"``, ``"gru"``, ``"lstm"``, ``"indrnn"`` or a
            ``keras_feedback.cores.Core`` (its linear weights become
            convolutions).
        activation: activation of the core (candidate for gru/lstm); None
            (default): the core's. As in
            ``keras_feedback.layers.FeedbackCell``; learnable activations
            included (per-unit parameters follow the channels).
        recurrent_activation: activation of the gru/lstm gates; None
            (default): the core's (``"sigmoid"``).
        feedback_activation: activation ``σ`` of the feedback maps.
        output_activation: ``g`` of the output readout, default linear.
        output_filters: optional positive int, adds the 1x1 output readout.
        attention: bool, adds the per-pixel gate ``α_t``.
        residual: bool, ``h_t = h_{t-1} + f(...)``.
        layer_norm: bool, normalises each pixel's new hidden channels.
        use_bias: bool.
        kernel_initializer: initializer of the input kernel ``W_x`` (default ``"glorot_uniform"``).
        recurrent_initializer: initializer of the recurrent kernel ``U_h`` (default ``"orthogonal"``).
        feedback_initializer: initializer of the feedback kernels ``W_c`` and ``U_c`` (default ``"glorot_uniform"``).
        attention_initializer: initializer of the attention kernel ``W_α`` (default ``"glorot_uniform"``).
        output_initializer: initializer of the output kernel ``W_y`` (default ``"glorot_uniform"``).
        bias_initializer: initializer of every bias (default ``"zeros"``).
        kernel_regularizer: optional regularizer of the input kernel ``W_x``.
        recurrent_regularizer: optional regularizer of the recurrent kernel ``U_h``.
        feedback_regularizer: optional regularizer of the feedback kernels ``W_c`` and ``U_c``.
        attention_regularizer: optional regularizer of the attention kernel ``W_α``.
        output_regularizer: optional regularizer of the output kernel ``W_y``.
        bias_regularizer: optional regularizer of every bias.
        kernel_constraint: optional constraint of the input kernel ``W_x``.
        recurrent_constraint: optional constraint of the recurrent kernel ``U_h``.
        feedback_constraint: optional constraint of the feedback kernels ``W_c`` and ``U_c``.
        attention_constraint: optional constraint of the attention kernel ``W_α``.
        output_constraint: optional constraint of the output kernel ``W_y``.
        bias_constraint: optional constraint of every bias.
        unit_forget_bias: None or bool, lstm only: forget-gate bias starts
            at 1; None: the core's (as in ``FeedbackCell``).
        dropout: float in [0, 1), on the inputs (one mask for all steps).
        recurrent_dropout: float in [0, 1), on ``h_{t-1}`` in the recurrent
            convolution.
        seed: int, seed of the dropout masks.
        return_sequences: bool, every step's output or only the last.
        return_state: bool, also return the final states (``h``, the lstm
            carry, ``c``), as maps.
        go_backwards: bool, process time in reverse.
        stateful: bool, the final states of a batch are the initial states
            of the next one (fixed batch size); ``reset_state()`` zeroes
            them, ``reset_state(states)`` sets them.
        unroll: bool, unroll the loop (static time only).
        return_trace: bool, also return a dict of the per-step ``"h"``,
            ``"c"`` and ``"alpha"`` maps, each ``(batch, time, ...)``.
        zero_output_for_mask: bool, masked steps output zeros.
        engine: ``"auto"``, ``"xla"`` or ``"reference"``.
        time_buckets: ``"auto"``, None or a list of lengths: the padding of
            varying lengths to buckets, as in ``Feedback``.
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
        filters: int,
        kernel_size: Union[int, Tuple[int, int]],
        strides: Union[int, Tuple[int, int]] = 1,
        padding: str = "valid",
        data_format: Optional[str] = None,
        dilation_rate: Union[int, Tuple[int, int]] = 1,
        feedback_filters: Optional[int] = None,
        core: CoreLike = "gru",
        activation: ActivationLike = None,
        recurrent_activation: ActivationLike = None,
        feedback_activation: ActivationLike = "sigmoid",
        output_filters: Optional[int] = None,
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
        bias_initializer: InitializerLike = "zeros",
        kernel_regularizer: RegularizerLike = None,
        recurrent_regularizer: RegularizerLike = None,
        feedback_regularizer: RegularizerLike = None,
        attention_regularizer: RegularizerLike = None,
        output_regularizer: RegularizerLike = None,
        bias_regularizer: RegularizerLike = None,
        kernel_constraint: ConstraintLike = None,
        recurrent_constraint: ConstraintLike = None,
        feedback_constraint: ConstraintLike = None,
        attention_constraint: ConstraintLike = None,
        output_constraint: ConstraintLike = None,
        bias_constraint: ConstraintLike = None,
        unit_forget_bias: Optional[bool] = None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: Optional[int] = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        return_trace: bool = False,
        zero_output_for_mask: bool = False,
        engine: str = "auto",
        time_buckets: Union[str, Sequence[int], None] = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            return_trace=return_trace,
            zero_output_for_mask=zero_output_for_mask,
            engine=engine,
            time_buckets=time_buckets,
            **kwargs,
        )
        self.cell = ConvFeedbackCell(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            feedback_filters=feedback_filters,
            core=core,
            activation=activation,
            recurrent_activation=recurrent_activation,
            feedback_activation=feedback_activation,
            output_filters=output_filters,
            output_activation=output_activation,
            attention=attention,
            residual=residual,
            layer_norm=layer_norm,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            feedback_initializer=feedback_initializer,
            attention_initializer=attention_initializer,
            output_initializer=output_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            feedback_regularizer=feedback_regularizer,
            attention_regularizer=attention_regularizer,
            output_regularizer=output_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            feedback_constraint=feedback_constraint,
            attention_constraint=attention_constraint,
            output_constraint=output_constraint,
            bias_constraint=bias_constraint,
            unit_forget_bias=unit_forget_bias,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            name="conv_feedback_cell",
            dtype=self.dtype_policy,
        )
        self.input_spec = keras.InputSpec(ndim=5)

    # Read-only views of the cell's configuration.
    filters = property(lambda self: self.cell.units)
    feedback_filters = property(lambda self: self.cell.feedback_units)
    output_filters = property(lambda self: self.cell.output_units)
    units = filters
    feedback_units = feedback_filters
    output_units = output_filters
    core = property(lambda self: self.cell.core)
    kernel_size = property(lambda self: self.cell.kernel_size)
    strides = property(lambda self: self.cell.strides)
    padding = property(lambda self: self.cell.padding)
    data_format = property(lambda self: self.cell.data_format)
    dilation_rate = property(lambda self: self.cell.dilation_rate)
    spec = property(lambda self: self.cell.conv_spec)
