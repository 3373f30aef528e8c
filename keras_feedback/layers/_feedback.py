"""``Feedback``: the feedback-recurrent sequence layer.

The layer is the recurrent base (``FeedbackRNN``) with a ``FeedbackCell``
(``_feedback_cell.py``: its step math and its weights); the engine owns time.
"""

from typing import Any
from typing import Optional
from typing import Sequence
from typing import Union

import keras

from keras_feedback import cores
from keras_feedback._api import public
from keras_feedback.layers import _convert
from keras_feedback.layers._cell import ActivationLike
from keras_feedback.layers._cell import ConstraintLike
from keras_feedback.layers._cell import CoreLike
from keras_feedback.layers._cell import InitializerLike
from keras_feedback.layers._cell import RegularizerLike
from keras_feedback.layers._feedback_cell import FeedbackCell
from keras_feedback.layers._recurrent import FeedbackRNN


@public("keras_feedback.layers.Feedback")
class Feedback(FeedbackRNN):
    """Feedback-recurrent sequence layer.

    Runs a ``FeedbackCell`` over the time axis with one of the library's
    recurrence engines. The inputs of all steps are projected at once, before
    the loop. With ``feedback_units=0`` (and no attention or output
    projection) it computes exactly what ``keras.layers.SimpleRNN``, ``GRU``
    or ``LSTM`` compute, with the same weights.

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
        engine: ``"auto"`` (default: ``"xla"`` where the graph runs in this
            process, ``"reference"`` in graphs traced for export, with
            ``unroll=True`` and for small calls, where compiling would cost
            more than it saves: ``engine.choose``, ``docs/engine.md``),
            ``"xla"`` (XLA-compiled
            forward and backward loops) or ``"reference"`` (a plain
            ``tf.while_loop``).
        time_buckets: ``"auto"`` (default), None or an increasing list of
            lengths. Where the compiled engine runs and the length can vary
            (eager calls; ``fit``, ``evaluate`` and ``predict`` on data whose
            time axis is not fixed), the time axis is padded to its bucket
            (``"auto"``: the next power of two, at least 8; a list: its
            smallest entry that fits, lengths beyond the last unpadded) and
            the padding masked, so XLA compiles once per bucket rather than
            once per length. The results of the real steps do not change and
            sequence outputs keep the caller's length. None: no padding.
        use_cudnn: ``"auto"``, True or False, kept as ``self.use_cudnn`` with
            a GRU or LSTM core, as Keras's ``GRU`` and ``LSTM`` keep it
            (``Bidirectional`` copies it; other cores have no such
            attribute, as ``SimpleRNN``, and refuse True). Feedback runs its
            own engines, never cuDNN: True fails when the layer is called,
            with Keras's advice.
        **kwargs: the base Layer arguments; also, as Keras accepts them in a
            saved config, ``implementation`` (any value, ignored) and
            ``time_major=False``.

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
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        return_trace: bool = False,
        zero_output_for_mask: bool = False,
        engine: str = "auto",
        time_buckets: Union[str, Sequence[int], None] = "auto",
        use_cudnn: Union[str, bool] = "auto",
        **kwargs: Any,
    ) -> None:
        _convert.keras_only_arguments(kwargs, use_cudnn)
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
        self.cell = FeedbackCell(
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
            quantization=quantization,
            name="feedback_cell",
            dtype=self.dtype_policy,
        )
        # As Keras: GRU and LSTM keep `use_cudnn` (Bidirectional copies it),
        # SimpleRNN has none.
        if isinstance(self.cell.core_object, (cores.GRUCore, cores.LSTMCore)):
            self.use_cudnn = use_cudnn
        elif use_cudnn is True:
            raise ValueError(
                f"Argument `use_cudnn`=True: cuDNN runs Keras's GRU and LSTM "
                f"only, and the core is {self.cell.core_object!r}; leave it 'auto'"
            )
        if engine == "xla" and not self.cell.fused:
            raise ValueError(
                f"Argument `engine`='xla': the core {self.cell.core_object!r} "
                "runs on the reference engine only (a Keras cell may hold "
                "Python state or ops XLA cannot compile); pass engine='auto' "
                "or 'reference'"
            )
        self.input_spec = keras.InputSpec(ndim=3)

    # Read-only views of the cell's configuration.
    units = property(lambda self: self.cell.units)
    feedback_units = property(lambda self: self.cell.feedback_units)
    core = property(lambda self: self.cell.core)

    @classmethod
    def from_keras(cls, layer):
        """The ``Feedback`` layer equivalent to a Keras recurrent layer.

        Takes a ``keras.layers.SimpleRNN``, ``GRU`` or ``LSTM`` (or a
        ``keras.layers.Bidirectional`` of one) and returns a new ``Feedback``
        layer (or ``Bidirectional`` of two) with ``feedback_units=0``, the
        same configuration (``return_sequences``, ``go_backwards``,
        ``stateful``, dropout, initializers, dtype policy, name, ...) and,
        when the Keras layer is built, a copy of its weights: the outputs
        are the same. A built stateful layer keeps its fixed batch size and
        its current states. ``keras_feedback.layers.convert(model)`` does it
        for every such layer of a model.

        Args:
            layer: a Keras ``SimpleRNN``, ``GRU`` (either ``reset_after``)
                or ``LSTM``, or a ``Bidirectional`` of one.

        Returns:
            A ``Feedback`` layer, or a ``keras.layers.Bidirectional`` of two.

        Raises:
            TypeError: ``layer`` is not one of these layers.
            ValueError: its configuration has no ``Feedback`` equivalent
                (an ``activity_regularizer``).

        Example:

        >>> import keras
        >>> import numpy as np
        >>> from keras_feedback.layers import Feedback
        >>> gru = keras.layers.GRU(4, return_sequences=True)
        >>> x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
        >>> expected = gru(x)
        >>> feedback = Feedback.from_keras(gru)
        >>> feedback.feedback_units, feedback.core
        (0, 'gru')
        >>> bool(np.allclose(feedback(x), expected, atol=1e-6))
        True
        """
        return _convert.from_keras(layer)
