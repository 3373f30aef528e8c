"""``FeedbackCell``: the feedback-recurrent cell, one time step.

The cell is its step math (``keras_feedback.cells._feedback_math``) and its
weights (``FeedbackCellBase``); ``Feedback`` (``_feedback.py``) runs it over
time with the library's engines.
"""

from typing import Any
from typing import Optional

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback.cells import _feedback_math as math
from keras_feedback.layers import _qat_support
from keras_feedback.layers._cell import ActivationLike
from keras_feedback.layers._cell import ConstraintLike
from keras_feedback.layers._cell import CoreLike
from keras_feedback.layers._cell import FeedbackCellBase
from keras_feedback.layers._cell import InitializerLike
from keras_feedback.layers._cell import RegularizerLike


class SequenceLayout:
    """The layout hooks of a cell of ``(batch, time, features)`` sequences
    (``FeedbackCell``, the stack's cell): tensors go to the engine and come
    back as they are, a state is ``(batch, size)``."""

    input_rank = 3
    input_layout = "(batch, time, features)"

    @property
    def state_shapes(self):
        """The shape of each state without the batch: ``(size,)``."""
        return [(size,) for size in self.spec.state_size]

    @property
    def engine_state_sizes(self):
        return list(self.spec.state_size)

    def engine_inputs(self, params, sequences):
        return sequences

    def to_engine(self, tensor):
        return tensor

    def from_engine(self, tensor, channels):
        return tensor

    def output_shape(self, input_shape, lead, channels):
        return (*lead, channels)


@public("keras_feedback.layers.FeedbackCell")
class FeedbackCell(SequenceLayout, FeedbackCellBase):
    """Cell of a feedback-recurrent network: one time step.

    Implements, for input ``x_t``, hidden state ``h_t`` (``units``) and
    feedback signal ``c_t`` (``feedback_units``):

        h_t = f(x_t, h_{t-1}, c_{t-1})        # core: simple, gru or lstm
        c_t = feedback_activation(W_c h_t + b_c)
        α_t = sigmoid(W_α [h_t; c_t] + b_α)   # if attention
        y_t = output_activation(W_y [α_t ⊙ h_t; c_t] + b_y)   # if output_units

    With ``feedback_units=0``, no attention and no output projection the cell
    and a built-in core is exactly Keras's ``SimpleRNNCell``, ``GRUCell``
    (either ``reset_after``) or ``LSTMCell``: same weights in the same order, same outputs. The cell
    follows the Keras cell contract, so it also runs inside
    ``keras.layers.RNN`` and ``keras.layers.StackedRNNCells``; prefer the
    ``Feedback`` layer, which projects all inputs at once and uses the
    library's engines.

    Args:
        units: positive int, size of the hidden state ``h``.
        feedback_units: non-negative int, size of the feedback signal ``c``.
            Defaults to ``units``; ``0`` removes the feedback loop.
        core: the recurrent update ``f``: ``"simple"`` (Elman), ``"gru"``,
            ``"lstm"``, ``"indrnn"``, or a ``keras_feedback.cores.Core``
            (``GRUCore(reset_after=False)``, ``IndRNNCore(...)``, your
            own).
        activation: activation of the core (candidate for gru/lstm). None
            (default): the core's (``"tanh"``; ``"relu"`` for IndRNN). Any name ``keras_feedback.activations.get``
            accepts, or a callable, or a learnable activation instance
            (``keras_feedback.activations.Pade("relu")``, ...: the cell
            builds its parameters for the width the activation is applied
            to, after its own weights).
        recurrent_activation: activation of the gru/lstm gates; None
            (default): the core's (``"sigmoid"``).
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
        unit_forget_bias: None or bool, lstm only: adds 1 to the forget
            gate bias at initialisation (as Keras's ``LSTMCell``); None:
            the core's (``LSTMCore``'s default True). With ``core="lstm"``
            it configures the core; a different value than a core object's
            is an error.
        reset_after: None or bool, gru only: Keras's ``GRU`` forms (True,
            Keras's default: the reset gate after the recurrent matmul;
            False: before it, one bias vector). None: the core's
            (``GRUCore``'s default True); same rules as ``unit_forget_bias``.
        dropout: float in [0, 1), dropout rate on the inputs.
        recurrent_dropout: float in [0, 1), dropout rate on ``h_{t-1}`` in
            the recurrent matmul.
        seed: int, seed of the dropout masks.
        memory_attention: None, ``"additive"`` (Bahdanau), ``"dot"`` or
            ``"scaled_dot"`` (Luong): at every step the new ``h_t`` attends
            over a memory (an encoder's outputs, given to the layer's call
            as ``memory``), and Luong's attentional state
            ``h̃_t = tanh(W_m [h_t; ctx_t] + b_m)`` takes the place of
            ``h_t`` in the gate and the output (``docs/seq2seq.md``).
        memory_units: the size of the keys and queries (default ``units``;
            with ``"dot"``/``"scaled_dot"`` and None the query is ``h_t``).
        input_feeding: with memory attention (default True), ``h̃_{t-1}``
            joins the next step's input (Luong's input feeding): a state
            ``attentional``. True without ``memory_attention`` is an error.
        quantization: None, or ``"int8"``: quantization-aware training
            (``keras_feedback.quantization``): the step computes with the
            rounding of LiteRT's int8 kernels, on the ranges in the weight
            ``quantization_ranges`` (observed on data by
            ``keras_feedback.quantization.quantize_model``), so that the
            weights learn to tolerate it and ``export_litert(...,
            quantization="int8")`` converts with those ranges. Built-in
            cores; activations tanh, sigmoid, relu or linear; no memory
            attention or layer norm; float32.
        memory_initializer: initializer of the memory attention's kernels.
        memory_regularizer: optional regularizer of the memory attention's
            kernels.
        memory_constraint: optional constraint of the memory attention's
            kernels.
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

    SUPPORTS_MEMORY = True

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
        quantization: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            units,
            feedback_units=feedback_units,
            core=core,
            activation=activation,
            recurrent_activation=recurrent_activation,
            feedback_activation=feedback_activation,
            output_units=output_units,
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
            memory_initializer=memory_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            feedback_regularizer=feedback_regularizer,
            attention_regularizer=attention_regularizer,
            output_regularizer=output_regularizer,
            memory_regularizer=memory_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            feedback_constraint=feedback_constraint,
            attention_constraint=attention_constraint,
            output_constraint=output_constraint,
            memory_constraint=memory_constraint,
            bias_constraint=bias_constraint,
            unit_forget_bias=unit_forget_bias,
            reset_after=reset_after,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            memory_attention=memory_attention,
            memory_units=memory_units,
            input_feeding=input_feeding,
            **kwargs,
        )
        self.quantization = _qat_support.check(self, quantization)
        self.state_size = self.spec.state_size
        self.output_size = self.spec.output_size
        self.input_spec = keras.InputSpec(min_ndim=2)

    def kernel_shape(self, inputs, outputs, pointwise=False):
        return (inputs, outputs)

    def position_shape(self, channels):
        return (channels,)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last (feature) dimension of the inputs must be defined, "
                f"got input shape {tuple(input_shape)}"
            )
        self.build_weights(features)
        if self.quantization is not None:
            _qat_support.build(self)
        self.step_shape = (features,)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: features})

    # --- what the layer and the engine need ------------------------------

    def recurrence(self):
        """The ``Recurrence`` the engine runs: it projects the sequences."""
        return math.make_recurrence(self.spec)

    def readout(self, params, states):
        return math.readout(self.spec, params["weights"], states, params.get("memory"))

    def memory_params(self, params, memory, memory_mask):
        """``params`` with the memory's keys, computed once per call."""
        memory = math.memory_params(self.spec, params["weights"], memory, memory_mask)
        return {**params, "memory": memory}

    def memory_alignment(self, params, hidden):
        """The attention weights ``(B, T, M)`` of hidden states ``(B, T,
        H)``: those each step gave (a step's weights are a function of its
        ``h``)."""
        # No activation of the cell enters the weights: the spec as it is.
        return math.memory_alignment(
            self.spec, params["weights"], params["memory"], hidden
        )

    # --- the Keras cell contract -----------------------------------------

    def call(self, inputs, states, training=False):
        if self.memory_attention:
            raise ValueError(
                "A FeedbackCell with memory_attention runs in the Feedback layer "
                "(which takes the `memory`), not in keras.layers.RNN"
            )
        states = tf.nest.flatten(states)
        inputs = tf.cast(inputs, self.compute_dtype)
        batch = tf.shape(inputs)[0]
        params, _ = self.engine_params(training, batch)
        if training and self.dropout:
            inputs = inputs * keras.random.dropout(
                tf.ones_like(inputs), self.dropout, seed=self.seed_generator
            )
        projected = math.project_inputs(self.spec, params["weights"], inputs)
        step = math.make_recurrence(self.spec, project=False).step
        output, new_states, _ = step(params, projected, states)
        return output, new_states

    def get_initial_state(self, batch_size=None):
        return [
            tf.zeros([batch_size, size], self.compute_dtype) for size in self.state_size
        ]

    def cell_config(self):
        config = super().cell_config()
        if self.quantization is not None:
            config["quantization"] = self.quantization
        return config
