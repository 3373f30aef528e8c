"""The step math of the feedback cell: pure functions of (params, inputs, state).

Nothing here owns a variable or knows about time. ``FeedbackCell`` (in
``keras_feedback.layers``) owns the weights and hands ``project_inputs`` and
``step`` to an engine, which runs them over a sequence. With
``feedback_units == 0`` and a built-in core the math is exactly Keras's
``SimpleRNNCell``, ``GRUCell`` and ``LSTMCell``.

The core (``keras_feedback.cores``) is the update of ``h`` and its own
states; this module composes it with what every core shares. For hidden
size H, feedback size F and the core's projected width G (``core.width(H)``:
H, 3H, 4H for simple, gru, lstm) the parameters are:

    kernel (D, G)                            the input projection
    the core's own weights (``core.weights(H)``: recurrent_kernel, bias, ...)
    feedback_recurrent_kernel (F, G)         U_c: c_{t-1} into the core
    feedback_kernel (H, F), feedback_bias (F)      W_c, b_c
    attention_kernel (H+F, H), attention_bias (H)  W_α, b_α
    output_kernel (H+F, O), output_bias (O)        W_y, b_y
    layer_norm_gamma (H), layer_norm_beta (H)
    memory attention (``memory_attention``, memory features M_d, depth A):
    memory_kernel (M_d, A)                 keys k_j = m_j W_k, once per sequence
    memory_query_kernel (H, A)             q_t = h_t W_q (additive, or with
                                           ``memory_units``; else q_t = h_t)
    memory_score_kernel (A)                v (additive)
    memory_output_kernel (H+M_d, H), memory_output_bias (H)
                                           h̃_t = tanh(W_m [h_t; ctx_t] + b_m)
    input_feeding_kernel (H, G)            h̃_{t-1} into the core
    activation, recurrent_activation, feedback_activation, output_activation:
        for a parametric activation only, the dict of its tensors
        (``keras_feedback.activations.ParametricActivation``); the spec then
        holds its ``PureActivation``, called as ``pure(params[slot], x)``

Every matmul of ``step`` goes through ``linear``, which convolves instead when
a kernel is a convolution kernel ``(kh, kw, in, out)``: the convolutional cell
(``_conv_feedback_math``) is this same step on ``(B, H, W, C)`` maps.
"""

import dataclasses
import functools
from typing import Callable
from typing import Optional

import tensorflow as tf
from tensorflow.python.eager import record

from keras_feedback.activations._learnable import PureActivation
from keras_feedback.cells import _fake_quant
from keras_feedback.cores._base import Core
from keras_feedback.cores._base import StepOps
from keras_feedback.engine._contract import Deferred
from keras_feedback.engine._contract import Recurrence

MEMORY_ATTENTIONS = ("additive", "dot", "scaled_dot")
LAYER_NORM_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Static description of a feedback cell: everything that is not a tensor."""

    core: Core
    units: int
    feedback_units: int
    output_units: Optional[int]
    attention: bool
    residual: bool
    layer_norm: bool
    use_bias: bool
    activation: Callable
    recurrent_activation: Callable
    feedback_activation: Callable
    output_activation: Callable
    memory_attention: Optional[str] = None
    memory_units: Optional[int] = None
    input_feeding: bool = False
    # Quantization-aware training (``_fake_quant``): the step's points.
    quantization: Optional[_fake_quant.QuantSpec] = None

    @property
    def memory_depth(self):
        """The size ``A`` of the memory's keys and of the queries."""
        return self.memory_units or self.units

    @property
    def memory_query(self):
        """Whether the query is projected (``h_t W_q``) or is ``h_t``."""
        return self.memory_attention == "additive" or self.memory_units is not None

    @property
    def width(self):
        """The size ``G`` of the projected input."""
        return self.core.width(self.units)

    @property
    def gates(self):
        """``width`` in units of ``units`` (1, 3, 4 for simple, gru, lstm)."""
        return self.width // self.units

    @property
    def core_states(self):
        """How many of the states are the core's (``h`` first)."""
        return len(self.core.state_names)

    @property
    def state_size(self):
        """Sizes of the state tensors, in order: the core's (h first),
        (feedback c), (attentional, with input feeding)."""
        sizes = list(self.core.state_sizes(self.units))
        if self.feedback_units:
            sizes.append(self.feedback_units)
        if self.input_feeding:
            sizes.append(self.units)
        return sizes

    @property
    def output_size(self):
        return self.output_units or self.units

    @property
    def trace_sizes(self):
        """Per-step quantities recorded by ``return_trace``: name -> size."""
        sizes = {"h": self.units}
        if self.feedback_units:
            sizes["c"] = self.feedback_units
        if self.attention:
            sizes["alpha"] = self.units
        return sizes


def input_bias(spec, params):
    """The bias of the input projection (its input part for gru), or None."""
    if not spec.use_bias:
        return None
    return spec.core.input_bias(params)


def project_inputs(spec, params, inputs, bias=True):
    """The input projection ``x W_x + b`` (input part of the bias for gru).

    Works for one step ``(B, D)`` or all steps at once ``(B, T, D)``: the
    engine calls it once, before the loop, as one large matmul. ``bias=False``
    leaves ``b`` out (the engine's step then adds it, see ``make_step_fn``).
    """
    if not spec.core.input_kernel:
        return inputs  # the core reads the inputs as they are
    kernel = params["kernel"]
    if spec.quantization is not None:
        # LiteRT's FULLY_CONNECTED on int8 inputs and weights.
        ranges = params["quantization_ranges"]
        inputs = _fake_quant.point(inputs, ranges, _fake_quant.INPUT)
        kernel = _fake_quant.weight(kernel, force=True)
    bias = input_bias(spec, params) if bias else None

    def affine(x):
        product = tf.matmul(x, kernel)
        return product if bias is None else product + bias

    if inputs.shape.rank == 2:
        projected = affine(inputs)
    else:
        # One (B*T, D) x (D, G) matmul: the fastest form, and a plain
        # FULLY_CONNECTED op (its bias fused) after LiteRT conversion.
        lead = tf.shape(inputs)[:-1]
        flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
        projected = tf.reshape(
            affine(flat), tf.concat([lead, tf.shape(kernel)[-1:]], 0)
        )
    if spec.quantization is not None:
        # LiteRT's FULLY_CONNECTED output, its bias included.
        projected = _fake_quant.point(
            projected, params["quantization_ranges"], _fake_quant.PROJECTION
        )
    return projected


def linear(x, kernel):
    """``x`` times a dense kernel ``(in, out)``; or, for a convolution kernel
    ``(kh, kw, in, out)``, its stride-1 ``"same"`` convolution of the
    channels-last maps ``x``. In a quantised step the kernel is on its int8
    grid (``_fake_quant``)."""
    kernel = _fake_quant.weight(kernel)
    if kernel.shape.rank == 4:
        maps = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
        # Conv2D returns its input's shape for an empty batch: say it.
        return tf.reshape(maps, tf.concat([tf.shape(x)[:-1], kernel.shape[-1:]], 0))
    return tf.matmul(x, kernel)


def _layer_norm(spec, params, x):
    # Half precision normalises in float32; float32 and float64 in their own.
    dtype = x.dtype
    x32 = x if _wide(dtype) is None else tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    normed = (x32 - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPSILON)
    normed = tf.cast(normed, dtype)
    return normed * params["layer_norm_gamma"] + params["layer_norm_beta"]


def _split_states(spec, states):
    """``(core states, c, attentional)``, None for those the cell has not."""
    states = list(states)
    core = states[: spec.core_states]
    del states[: spec.core_states]
    c = states.pop(0) if spec.feedback_units else None
    attentional = states.pop(0) if spec.input_feeding else None
    return core, c, attentional


def memory_params(spec, params, memory, memory_mask=None):
    """What every step reads of the memory, computed once per sequence.

    ``memory``: ``(B, M, M_d)``; ``memory_mask``: optional ``(B, M)``
    boolean, False at padded positions. Returns ``{"values": memory,
    "keys": memory W_k, "mask": memory_mask}`` (no ``"mask"`` without one).
    """
    flat = tf.reshape(memory, [-1, tf.shape(memory)[-1]])
    keys = tf.reshape(
        tf.matmul(flat, params["memory_kernel"]),
        tf.concat([tf.shape(memory)[:-1], [spec.memory_depth]], 0),
    )
    result = {"values": memory, "keys": keys}
    if memory_mask is not None:
        result["mask"] = tf.cast(memory_mask, tf.bool)
    return result


def _masked_softmax(scores, mask):
    """Softmax over the memory axis; masked positions get exactly zero (and a
    row with no unmasked position all zeros). Half precision runs in
    float32."""
    dtype = scores.dtype
    if dtype in (tf.float16, tf.bfloat16):
        scores = tf.cast(scores, tf.float32)
    if mask is not None:
        mask = tf.expand_dims(mask, 1)  # (B, 1, M): every query
        scores = tf.where(mask, scores, tf.fill(tf.shape(scores), scores.dtype.min))
    weights = tf.nn.softmax(scores, axis=-1)
    if mask is not None:
        weights = weights * tf.cast(mask, weights.dtype)
    return tf.cast(weights, dtype)


def memory_alignment(spec, params, memory, queries):
    """The attention weights ``(B, Q, M)`` of ``Q`` hidden states ``(B, Q,
    H)`` over the memory (``memory_params``)."""
    keys = memory["keys"]
    if spec.memory_query:
        queries = tf.matmul(queries, params["memory_query_kernel"])
    if spec.memory_attention == "additive":
        # v . tanh(k_j + q_t): (B, Q, M, A) summed against v.
        hidden = tf.tanh(tf.expand_dims(keys, 1) + tf.expand_dims(queries, 2))
        scores = tf.reduce_sum(hidden * params["memory_score_kernel"], axis=-1)
    else:
        scores = tf.matmul(queries, keys, transpose_b=True)
        if spec.memory_attention == "scaled_dot":
            scores = scores * tf.cast(spec.memory_depth**-0.5, scores.dtype)
    return _masked_softmax(scores, memory.get("mask"))


def _attend(spec, params, memory, h):
    """Luong's attentional hidden state ``h̃ = tanh(W_m [h; ctx] + b_m)`` of
    one step's ``h`` ``(B, H)``."""
    weights = memory_alignment(spec, params, memory, tf.expand_dims(h, 1))
    context = tf.matmul(weights, memory["values"])[:, 0]  # (B, M_d)
    attentional = tf.matmul(
        tf.concat([h, context], axis=-1), params["memory_output_kernel"]
    )
    if spec.use_bias:
        attentional = attentional + params["memory_output_bias"]
    return tf.tanh(attentional)


def _wide(dtype):
    """float32 for a half ``dtype`` (the gates' math runs in it), else None."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else None


ACTIVATION_SLOTS = (
    "activation",
    "recurrent_activation",
    "feedback_activation",
    "output_activation",
)


def bind_activations(spec, params, dtype=None):
    """``spec`` with each ``PureActivation`` bound to ``params[slot]``
    (cast to ``dtype`` if given).

    A parametric activation's tensors travel in the params, under its slot
    name, so that the step stays a pure function of its arguments.
    """

    def cast(tensors):
        if dtype is None:
            return tensors
        return tf.nest.map_structure(lambda t: tf.cast(t, dtype), tensors)

    bound = {
        slot: functools.partial(getattr(spec, slot), cast(params[slot]))
        for slot in ACTIVATION_SLOTS
        if isinstance(getattr(spec, slot), PureActivation)
    }
    return dataclasses.replace(spec, **bound) if bound else spec


def step(
    spec,
    params,
    projected,
    states,
    recurrent_mask=None,
    products=None,
    memory=None,
    candidate_term=None,
    candidate_scale=None,
):
    """One time step of the feedback cell.

    Args:
        spec: the cell's ``StepSpec``.
        params: dict of parameter tensors (names in the module docstring).
        projected: ``project_inputs`` of this step's input, ``(B, G)``.
        states: list of state tensors, sizes ``spec.state_size``.
        recurrent_mask: optional ``(B, H)`` recurrent dropout mask applied to
            ``h_{t-1}`` where it enters the core's recurrent products.
        products: optional dict kernel name -> the product the step would
            compute with it (``U h_{t-1}``, ``U_c c_{t-1}``), supplied by an
            engine instead (see ``make_recurrence``).
        memory: with memory attention, ``memory_params`` of the memory.
        candidate_term: optional ``(B, H)`` term the core adds to its
            candidate (``Core.update``).
        candidate_scale: optional ``(B, 1)`` factor of the core's own
            recurrent term in its candidate (``Core.update``).

    Returns:
        ``(y, new_states, trace)``: the output ``(B, output_size)``, the new
        state list, and a dict of the per-step ``h``, ``c``, ``alpha``.
    """
    wide = _wide(projected.dtype)
    bound = bind_activations(spec, params)
    # The core's activations take float32 parameters in half precision
    # (see ``StepOps.up``).
    core_spec = bound if wide is None else bind_activations(spec, params, wide)
    spec = bound
    quant = spec.quantization
    if (
        quant is not None
        and not _fake_quant.inline()
        and (tf.executing_eagerly() or record.could_possibly_record())
    ):
        # A quantised step where it runs eagerly or a gradient tape may
        # record it is its own traced function: TensorFlow's eager fast path
        # ignores the op callbacks' FakeQuants, and a tape records them
        # wrongly (as the quantised op itself), where the function's
        # gradient, built from its graph, has them right. Elsewhere it runs
        # inline: the fused engine builds its step's gradient from the graph
        # (``Recurrence.symbolic_gradients``).
        return _graph_step(spec)(
            params,
            projected,
            states,
            recurrent_mask,
            products,
            memory,
            candidate_term,
            candidate_scale,
        )
    return _step(
        spec,
        core_spec,
        params,
        projected,
        states,
        recurrent_mask,
        products,
        memory,
        candidate_term,
        candidate_scale,
    )


def _quantized_vectors(spec, params):
    """``params`` with the core's vector weights that multiply a state
    elementwise (IndRNN's ``u``: not kernels, not biases) on the int8 grid
    the converter gives them (biases it adds in 32 bits, or as ADD
    constants: left as they are)."""
    vectors = [
        w.name
        for w in spec.core.weights(spec.units)
        if not w.linear and w.group != "bias" and w.name in params
    ]
    if not vectors or _fake_quant.float_observation():
        return params
    return {
        **params,
        **{name: _fake_quant.fake_quant_constant(params[name]) for name in vectors},
    }


@functools.cache
def _graph_step(spec):
    """The quantised ``step`` of ``spec`` as a traced function."""

    def traced(params, projected, states, *args):
        wide = _wide(projected.dtype)
        core_spec = spec if wide is None else bind_activations(spec, params, wide)
        return _step(spec, core_spec, params, projected, states, *args)

    return tf.function(traced, autograph=False, reduce_retracing=True)


def _step(
    spec,
    core_spec,
    params,
    projected,
    states,
    recurrent_mask,
    products,
    memory,
    candidate_term,
    candidate_scale,
):
    """``step`` with, when ``spec`` is quantised, its points on their
    grids (``_fake_quant``)."""
    quant = spec.quantization
    ranges = None
    if quant is not None:
        # The states on their int8 grids (``project_inputs`` rounded the
        # projection).
        ranges = params["quantization_ranges"]
        states = _fake_quant.states_in(quant, ranges, states)
        params = _quantized_vectors(spec, params)
    core_states, c_prev, attentional_prev = _split_states(spec, states)
    h_prev = core_states[0]
    recurrent_input = h_prev if recurrent_mask is None else h_prev * recurrent_mask
    with _fake_quant.scope(quant, ranges):
        if spec.feedback_units and spec.core.input_kernel:
            projected = projected + _linear_product(
                params, products, "feedback_recurrent_kernel", c_prev
            )
        elif spec.feedback_units:
            projected = tf.concat([projected, c_prev], axis=-1)
        if spec.input_feeding:
            projected = projected + _linear_product(
                params, products, "input_feeding_kernel", attentional_prev
            )
        ops = StepOps(
            params,
            recurrent_input,
            core_spec.activation,
            core_spec.recurrent_activation,
            products,
            linear,
        )
        # Only the gated stack passes a scale: a core of its own may not take one.
        extra = {} if candidate_scale is None else {"candidate_scale": candidate_scale}
        new_states = list(
            spec.core.update(ops, projected, core_states, candidate_term, **extra)
        )
        h = new_states[0]
        if spec.layer_norm:
            h = _layer_norm(spec, params, h)
        if spec.residual:
            h = h_prev + h
        new_states[0] = h
        c = None
        if spec.feedback_units:
            c = linear(h, params["feedback_kernel"])
            if spec.use_bias:
                c = c + params["feedback_bias"]
            c = spec.feedback_activation(c)
            new_states.append(c)
        attentional = None
        if spec.memory_attention:
            attentional = _attend(spec, params, _needs_memory(memory), h)
            if spec.input_feeding:
                new_states.append(attentional)
        output, trace = _readout(spec, params, h, c, attentional)
        return output, new_states, trace


def _linear_product(params, products, name, x):
    """``linear(x, params[name])``, or the engine's ``products[name]``."""
    if products is not None and name in products:
        return products[name]
    return linear(x, params[name])


def _needs_memory(memory):
    if memory is None:
        raise ValueError(
            "A cell with memory attention needs the memory: pass `memory` "
            "(batch, memory_time, features) to the call"
        )
    return memory


def readout(spec, params, states, memory=None):
    """The output ``y`` that the states ``(h, [carry], [c], [attentional])``
    a step returned give: a step's output is a function of its new states
    (and the memory) alone."""
    spec = bind_activations(spec, params)
    core_states, c, attentional = _split_states(spec, states)
    h = core_states[0]
    if spec.memory_attention and attentional is None:
        attentional = _attend(spec, params, _needs_memory(memory), h)
    return _readout(spec, params, h, c, attentional)[0]


def _readout(spec, params, h, c, attentional=None):
    """``(y, trace)`` of the new ``h``, feedback ``c`` and, with memory
    attention, attentional state ``h̃`` (each None without), which then
    stands for ``h`` in the gate and the readout."""
    trace = {"h": h}
    if attentional is not None:
        h = attentional
    readout = [h]
    if c is not None:
        trace["c"] = c
        readout = [h, c]
    output = h
    if spec.attention:
        alpha = _linear_parts(spec, readout, params["attention_kernel"])
        if spec.use_bias:
            alpha = alpha + params["attention_bias"]
        alpha = tf.sigmoid(alpha)
        trace["alpha"] = alpha
        output = alpha * h
        readout = [output] if c is None else [output, c]
    if spec.output_units:
        output = _linear_parts(spec, readout, params["output_kernel"])
        if spec.use_bias:
            output = output + params["output_bias"]
        output = spec.output_activation(output)
    return output, trace


def _linear_parts(spec, parts, kernel):
    """``linear([parts...], kernel)``: of their concatenation; quantised, the
    sum of each part's product with its rows of ``kernel`` (LiteRT's int8
    CONCATENATION needs one scale for all its inputs, which the fixed-range
    feedback signal ``c`` and ``h`` have not)."""
    if len(parts) == 1:
        return linear(parts[0], kernel)
    if spec.quantization is None:
        return linear(tf.concat(parts, axis=-1), kernel)
    total, start = None, 0
    for part in parts:
        size = part.shape[-1]
        term = linear(part, kernel[start : start + size])
        total = term if total is None else total + term
        start += size
    return total


@functools.cache
def make_recurrence(spec, project=True):
    """The ``Recurrence`` an engine runs for ``spec`` (cached per spec).

    The engine's params are ``{"weights": ..., "recurrent_mask": ...}`` (the
    mask only when recurrent dropout is active). ``project=True``: the
    engine's inputs are the sequences, projected by one matmul without the
    bias, which the step adds (a bias added to the whole ``(B, T, G)``
    projection would be a second tensor of that size in the compiled
    backward pass); ``project=False``: the inputs are already projected,
    bias included (``project_inputs``).
    """

    # A quantised step's projection is rounded after its bias (LiteRT's
    # FULLY_CONNECTED): it is added with the projection.
    biased = spec.quantization is not None

    def step_fn(params, projected, states, products=None):
        weights = params["weights"]
        bias = input_bias(spec, weights) if project and not biased else None
        if bias is not None:
            projected = projected + bias
        return step(
            spec,
            weights,
            projected,
            states,
            params.get("recurrent_mask"),
            products,
            params.get("memory"),
        )

    def project_fn(params, sequences):
        return project_inputs(spec, params["weights"], sequences, bias=biased)

    return Recurrence(
        step=step_fn,
        output_size=spec.output_size,
        state_sizes=tuple(spec.state_size),
        trace_sizes=tuple(spec.trace_sizes.items()),
        project=project_fn if project else None,
        # A quantised step computes its products itself (each one a point).
        deferred=() if spec.quantization is not None else _deferred_linears(spec),
        symbolic_gradients=spec.quantization is not None,
    )


def _deferred_linears(spec):
    """The step's linears of the previous states, which an engine may compute:
    ``U h_{t-1}`` and, with feedback, ``U_c c_{t-1}``; with input feeding
    ``W_f h̃_{t-1}`` (see ``Deferred``)."""
    deferred = [
        Deferred(("weights", name), _recurrent_input, additive)
        for name, additive in spec.core.deferred()
    ]
    if spec.feedback_units and spec.core.input_kernel:
        feedback = _second_last_state if spec.input_feeding else _last_state
        deferred.append(
            Deferred(("weights", "feedback_recurrent_kernel"), feedback, True)
        )
    if spec.input_feeding:
        deferred.append(
            Deferred(("weights", "input_feeding_kernel"), _last_state, True)
        )
    return tuple(deferred)


def _recurrent_input(params, states):
    h = states[0]
    mask = params.get("recurrent_mask")
    if mask is None:
        return h
    return h * (mask[:, None] if h.shape.rank == 3 else mask)


def _last_state(params, states):
    return states[-1]


def _second_last_state(params, states):
    return states[-2]
